"""`swift://container/path` and `s3://bucket/key` (pure)."""
from __future__ import annotations

import posixpath
import urllib.parse
from dataclasses import dataclass

from lando_ssh.errors import BadInput

OBJECT_SCHEMES = ("swift", "s3")


def is_object_url(location: str) -> bool:
    return urllib.parse.urlsplit(location).scheme in OBJECT_SCHEMES if "://" in location else False


@dataclass(frozen=True)
class ObjectUrl:
    scheme: str  # "swift" | "s3"
    container: str  # a Swift container, an S3 bucket
    key: str  # the object's name ('' for the container; ending in '/' for a prefix)

    def __str__(self) -> str:
        return f"{self.scheme}://{self.container}/{urllib.parse.quote(self.key, safe='/~')}"

    def child(self, rel: str) -> ObjectUrl:
        """The object `rel` (a relative POSIX path) below this prefix."""
        prefix = self.key if not self.key or self.key.endswith("/") else self.key + "/"
        return ObjectUrl(self.scheme, self.container, prefix + rel)

    def as_prefix(self) -> ObjectUrl:
        return self if not self.key or self.key.endswith("/") else ObjectUrl(self.scheme, self.container,
                                                                             self.key + "/")

    @property
    def basename(self) -> str:
        return posixpath.basename(self.key.rstrip("/"))


def parse(url: str, what: str = "the URL") -> ObjectUrl:
    """An object URL; BadInput naming `what` for one that names no container or bucket."""
    split = urllib.parse.urlsplit(url)
    if split.scheme not in OBJECT_SCHEMES:
        raise BadInput(f"{what} {url} is not a swift:// or s3:// URL")
    if not split.netloc:
        raise BadInput(f"{what} {url} names no {'bucket' if split.scheme == 's3' else 'container'} "
                       f"(write {split.scheme}://CONTAINER/PATH)")
    if split.query or split.fragment:
        raise BadInput(f"{what} {url} has a query or fragment; an object URL is {split.scheme}://CONTAINER/PATH")
    key = urllib.parse.unquote(split.path.lstrip("/"))
    if any(part in (".", "..") for part in key.split("/")):
        raise BadInput(f"{what} {url} holds a '.' or '..' segment")
    return ObjectUrl(split.scheme, split.netloc, key)
