"""``import kgseqgraph`` exposes the subpackages (as PyG does) without importing PyG itself."""
import subprocess
import sys

import kgseqgraph


def test_subpackages_are_attributes():
    for name in kgseqgraph.SUBPACKAGES:
        module = getattr(kgseqgraph, name)
        assert module.__name__ == f"kgseqgraph.{name}"
    assert kgseqgraph.nn.KGEnricher.__module__ == "kgseqgraph.nn.embed.graph_enriched"
    assert set(kgseqgraph.SUBPACKAGES) <= set(dir(kgseqgraph))
    assert kgseqgraph.__version__ == kgseqgraph.utils.__version__


def test_the_bare_package_imports_no_pytorch_geometric():
    code = ("import sys, kgseqgraph, kgseqgraph.export; "
            "print(any(m == 'torch_geometric' or m.startswith('torch_geometric.') "
            "for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
