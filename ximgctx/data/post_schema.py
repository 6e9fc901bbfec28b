"""The one definition of a post's columns where posts are tables: Parquet manifests and Parquet shards.

A post's ``replies``, ``labels`` and ``meta`` vary in shape from post to post, so Arrow stores them as JSON
strings (readers decode them back); ``id`` and ``text`` are strings; ``image`` is a path (manifests) or, in
shards, a Hugging Face ``Image()`` struct holding the bytes. Imports pyarrow only when a schema is asked for.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["HF_FEATURES", "JSON_FIELDS", "POST_FIELDS", "posts_arrow_schema"]

#: the fields of a post record, in column order
POST_FIELDS = ("id", "image", "text", "replies", "labels", "meta")
#: the fields stored as JSON strings in a table
JSON_FIELDS = ("replies", "labels", "meta")
#: a shard's ``datasets`` features, in its Parquet metadata (so ``load_dataset`` decodes the images)
HF_FEATURES: dict[str, dict[str, str]] = {
    name: {"_type": "Image"} if name == "image" else {"dtype": "string", "_type": "Value"}
    for name in POST_FIELDS
}


def posts_arrow_schema(*, image_bytes: bool) -> Any:
    """The ``pyarrow.Schema`` of a table of posts.

    Args:
        image_bytes: True for shards (``image`` is a ``{bytes, path}`` struct, with :data:`HF_FEATURES` in the
            schema's metadata); False for manifests (``image`` is the path string).
    """
    import pyarrow as pa

    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())]) if image_bytes else pa.string()
    metadata = (
        {b"huggingface": json.dumps({"info": {"features": HF_FEATURES}}).encode()} if image_bytes else None
    )
    return pa.schema([(n, image if n == "image" else pa.string()) for n in POST_FIELDS], metadata=metadata)
