"""Suite-wide settings: one torch thread.

The suite runs many small models; on a 2-core machine torch's intra-op threads spin and
contend (tiny ops were measured 10-50x slower with 2 threads under load), and one thread also
makes results independent of the machine's core count.
"""
import torch

torch.set_num_threads(1)
