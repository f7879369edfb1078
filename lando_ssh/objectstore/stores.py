"""A store behind one interface, whatever its protocol: look objects up, sign grants, make segmented
uploads whole. `store_for` gives the one configured for a URL's scheme."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from lando_ssh.errors import BadInput
from lando_ssh.objectstore.urls import ObjectUrl

if TYPE_CHECKING:
    from lando_ssh.config import Config


@dataclass(frozen=True)
class ObjectInfo:
    """One object as the store describes it."""

    url: ObjectUrl
    size: int
    etag: str | None = None
    #: how `etag` follows from the bytes: "md5" (an object's MD5), "slo" (Swift: MD5 of its segments' MD5s),
    #: "s3multipart" (MD5 of its parts' MD5s, -N); None: not checkable (then the size alone is checked)
    etag_rule: str | None = None
    parts: tuple[int, ...] | None = None  # the sizes of a segmented object's parts, when known
    #: "s3multipart": the part sizes its ETag may follow from (each with N parts), the likeliest first
    part_sizes: tuple[int, ...] = ()
    #: "s3multipart": the store said the part size (`part_sizes` is that one): a mismatch is an error
    part_size_known: bool = False


@dataclass
class Upload:
    """A grant to put one object: one URL, or one per part; what the store needs to make it whole."""

    url: ObjectUrl
    size: int
    urls: list[str]
    part_size: int
    md5_header: str  # the header each part carries its MD5 in: "Etag" (Swift), "Content-MD5" (S3)
    upload_id: str | None = None  # a segmented upload's id (S3 multipart), or its segments' prefix (Swift)
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def segmented(self) -> bool:
        return self.upload_id is not None


class Store(Protocol):
    scheme: str

    def describe(self) -> str:
        """The store as a message names it (its endpoint and user; never a secret)."""
        ...

    def stat(self, url: ObjectUrl) -> ObjectInfo:
        """InputMissing for an object that does not exist; ObjectStoreRefused for a refused credential."""
        ...

    def listing(self, url: ObjectUrl) -> list[ObjectInfo]:
        """Every object below the prefix `url` (markers of pseudo-directories left out)."""
        ...

    def get_grants(self, url: ObjectUrl) -> list[str]:
        """HTTP(S) URLs that read this one object until the grants expire: one, or one per part (`stat`'s
        `parts`, in order)."""
        ...

    def ensure_container(self, url: ObjectUrl) -> None:
        """The container/bucket of `url`, made when it does not exist."""
        ...

    def start_put(self, url: ObjectUrl, size: int, part_size: int) -> Upload:
        """Grants to put `size` bytes at `url`: one PUT, or one per part of `part_size` (in segments). A segmented
        one first removes what an interrupted earlier upload of `url` left (S3: its multipart uploads aborted;
        Swift: lando's segments of `url` its current object is not made of)."""
        ...

    def finish_put(self, upload: Upload, etags: list[str]) -> None:
        """A segmented upload made whole from its parts' MD5s (the store checks them); nothing for one PUT."""
        ...

    def abort_put(self, upload: Upload) -> None:
        """What a segmented upload cut short sent, removed (best effort: never raises); nothing for one PUT."""
        ...


def store_for(config: Config, url: ObjectUrl, project: str | None = None) -> Store:
    """The store for the URL's scheme, with the credentials of `project` (the job's) when
    `object_store.projects` names it, else the server's; BadInput when there is none."""
    stores = config.object_store.for_project(project)
    mine = config.object_store.projects.get(project) if project else None
    if url.scheme == "swift":
        if stores.swift is None:
            raise BadInput(f"{url}: this server has no Swift store configured (object_store.swift in "
                           f"{config.source})")
        from lando_ssh.objectstore.swift import SwiftStore

        return SwiftStore(stores.swift, config.cloud_settings, stores.grant_seconds,
                          project if mine and mine.swift else None)
    if stores.s3 is None:
        raise BadInput(f"{url}: this server has no S3 store configured (object_store.s3 in {config.source})")
    from lando_ssh.objectstore.s3 import S3Store

    return S3Store(stores.s3, stores.grant_seconds, stores.segment_mb * 1024 * 1024, project if mine and mine.s3
                   else None)


def check_configured(config: Config, url: ObjectUrl, project: str | None = None) -> None:
    """BadInput when the config has no store for the URL's scheme (at submit, before anything runs)."""
    stores = config.object_store.for_project(project)
    if (url.scheme == "swift" and stores.swift is None) or (url.scheme == "s3" and stores.s3 is None):
        store_for(config, url, project)
