"""Build the collaborative KG from your own pandas frames."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from torch_geometric.data import HeteroData

from ..data.graph import build_collaborative_kg

__all__ = ["from_pandas"]


def from_pandas(
    interactions: pd.DataFrame,
    triples: pd.DataFrame | None = None,
    links: pd.DataFrame | None = None,
    item_text: pd.DataFrame | pd.Series | dict | None = None,
    *,
    order_as_time: bool = False,
    **kwargs: Any,
) -> HeteroData:
    r"""The collaborative KG of in-memory frames: a thin wrapper of
    :func:`~kgseqgraph.data.build_collaborative_kg` (see it for the columns and the options
    ``items``, ``users``, ``sources``, ``unknown_links``, ``drop_duplicate_interactions``).

    Args:
        interactions: columns ``user``, ``item``, ``time`` (``rating`` optional).
        triples: columns ``head``, ``relation``, ``tail``.
        links: columns ``item``, ``entity`` (KG entity of each item).
        item_text: ``item``/``text`` frame, Series or dict.
        order_as_time: the frame has no ``time`` column and its row order is each user's
            chronological order: ``time`` becomes the position of the row among the user's rows
            (0, 1, …). Refused when a ``time`` column exists.

    Example:
        >>> import pandas as pd
        >>> inter = pd.DataFrame({"user": ["u1", "u1", "u2"], "item": ["a", "b", "a"],
        ...                       "time": [1, 2, 1]})
        >>> kg = pd.DataFrame({"head": ["m.a"], "relation": ["film.genre"], "tail": ["m.g"]})
        >>> links = pd.DataFrame({"item": ["a"], "entity": ["m.a"]})
        >>> data = from_pandas(inter, kg, links)
        >>> data["item", "film_genre", "entity"].edge_index.tolist()
        [[0], [0]]
    """
    if order_as_time:
        if not isinstance(interactions, pd.DataFrame):
            raise TypeError(f"interactions must be a pandas DataFrame, got "
                            f"{type(interactions).__name__}")
        if "time" in interactions.columns:
            raise ValueError("order_as_time=True but interactions already has a 'time' column")
        if "user" not in interactions.columns:
            raise ValueError("interactions needs a 'user' column (expected user,item[,rating])")
        interactions = interactions.assign(
            time=interactions.groupby("user", sort=False).cumcount().to_numpy(np.int64))
    return build_collaborative_kg(interactions, triples, links, item_text, **kwargs)
