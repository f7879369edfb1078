"""OpenStack Swift through python-swiftclient (v1 auth or Keystone v3). Grants are temp URLs; a large
upload goes up as segments in `<container>_segments` and becomes a static large object (SLO) when this
server puts its manifest, after the VM sent every segment: the object never looks whole before it is. An
upload cut short has its segments deleted (`abort_put`); one the server's crash left, by the object's next
upload (`start_put` deletes lando's segments of the object its current manifest does not use).

The temp URL key is the config's `temp_url_key`, else the account's (X-Account-Meta-Temp-URL-Key or -2),
else the container's, else a random key lando-ssh sets as the container's X-Container-Meta-Temp-URL-Key-2
(a key that signs for that one container only). Such a key reads no segment of a static large object in
another container, so a static large object is read segment by segment, each through a temp URL of its own
(`get_grants`), and each segment's MD5 is checked against its manifest."""
from __future__ import annotations

import contextlib
import json
import logging
import re
import secrets
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

from lando_ssh.config import CloudSettings, SwiftStoreConfig
from lando_ssh.errors import InputMissing, ObjectStoreRefused, ObjectStoreUnavailable
from lando_ssh.objectstore.stores import ObjectInfo, Upload
from lando_ssh.objectstore.urls import ObjectUrl

SEGMENTS = "lando"  # <container>_segments/<key>/lando/<upload id>/<n>
_SEGMENT_NAME = re.compile(r"[0-9a-f]{32}/[0-9]{8}")  # <upload id>/<n>, below <key>/lando/

# swiftclient logs each failed request with a part of its token: its errors are said here, translated, instead
logging.getLogger("swiftclient").setLevel(logging.CRITICAL + 1)


class SwiftStore:
    scheme = "swift"

    def __init__(self, config: SwiftStoreConfig, cloud: CloudSettings, grant_seconds: float,
                 project: str | None = None):
        self.config, self.cloud, self.grant_seconds = config, cloud, int(grant_seconds)
        self.project = project  # whose credentials these are (object_store.projects), None: the server's
        self._conn: Any = None
        self._keys: dict[str, str] = {}
        self._storage_url: str | None = None
        self._segments: dict[ObjectUrl, list[ObjectUrl]] = {}  # a static large object's segments, from `stat`

    def describe(self) -> str:
        whose = f", project {self.project}'s credentials" if self.project else ""
        return f"Swift at {self.config.auth_url or self.cloud.auth_url} (user {self._user()}{whose})"

    def _user(self) -> str | None:
        return self.config.username or self.cloud.username

    def _connection(self) -> Any:
        if self._conn is None:
            import swiftclient

            c, cloud = self.config, self.cloud
            auth_url = c.auth_url or cloud.auth_url
            v1 = bool(auth_url) and "/auth/v1" in str(auth_url)
            options = {} if v1 else {
                "project_name": c.project_name or cloud.project_name,
                "user_domain_name": c.user_domain_name or cloud.user_domain_name,
                "project_domain_name": c.project_domain_name or cloud.project_domain_name,
                "region_name": c.region_name or cloud.region_name}
            self._conn = swiftclient.Connection(
                authurl=auth_url, user=self._user(), key=c.password or cloud.password,
                auth_version="1" if v1 else "3", os_options={k: v for k, v in options.items() if v},
                retries=2, timeout=60)
        return self._conn

    @contextlib.contextmanager
    def _translated(self, url: ObjectUrl | str, doing: str) -> Iterator[None]:
        """swiftclient's exceptions as ours (the one place), each naming the object."""
        from swiftclient import ClientException

        try:
            yield
        except ClientException as e:
            status = e.http_status
            if status == 404:
                raise InputMissing(f"{url} does not exist ({self.describe()})") from None
            if status in (401, 403):
                raise ObjectStoreRefused(f"{self.describe()} refused lando-ssh's credential {doing} {url} "
                                         f"(HTTP {status}); check object_store.swift and the user's rights") from None
            if status == 413:
                raise ObjectStoreRefused(f"{self.describe()} refused {url}: the container's quota is full or the "
                                         "object is too large (HTTP 413)") from None
            if status is None or status >= 500:
                raise ObjectStoreUnavailable(f"{self.describe()} failed {doing} {url}: "
                                             f"{e.http_reason or e.msg}") from None
            raise ObjectStoreRefused(f"{self.describe()} answered HTTP {status} {doing} {url}") from None
        except OSError as e:
            raise ObjectStoreUnavailable(f"{self.describe()} cannot be reached {doing} {url}: {e}") from None

    def _storage(self) -> tuple[str, str]:
        """(scheme://host[:port], account path /v1/AUTH_x) of the storage URL (one authentication per store)."""
        if self._storage_url is None:
            with self._translated("the account", "authenticating for"):
                self._storage_url, _token = self._connection().get_auth()
        split = urllib.parse.urlsplit(self._storage_url)
        return f"{split.scheme}://{split.netloc}", urllib.parse.unquote(split.path.rstrip("/"))

    # -- reading ------------------------------------------------------------------------------

    def stat(self, url: ObjectUrl) -> ObjectInfo:
        conn = self._connection()
        with self._translated(url, "reading"):
            headers = conn.head_object(url.container, url.key)
            size, etag = int(headers.get("content-length", 0)), headers.get("etag", "").strip('"') or None
            if headers.get("x-static-large-object", "").lower() == "true":
                _h, body = conn.get_object(url.container, url.key, query_string="multipart-manifest=get")
                segments = json.loads(body)
                plain = all("range" not in s and not s.get("sub_slo") for s in segments)
                parts = tuple(int(s["bytes"]) for s in segments)
                if plain and sum(parts) == size:
                    self._segments[url] = [ObjectUrl("swift", *s["name"].lstrip("/").split("/", 1)) for s in segments]
                    return ObjectInfo(url, size, etag, "slo", parts)
                return ObjectInfo(url, size)
            if headers.get("x-object-manifest"):  # a dynamic large object: its ETag is not checkable
                return ObjectInfo(url, size)
        return ObjectInfo(url, size, etag, "md5" if etag and len(etag) == 32 else None)

    def listing(self, url: ObjectUrl) -> list[ObjectInfo]:
        prefix = url.as_prefix()
        with self._translated(prefix, "listing"):
            _h, objects = self._connection().get_container(url.container, prefix=prefix.key, full_listing=True)
        found = [ObjectInfo(ObjectUrl("swift", url.container, o["name"]), int(o["bytes"]))
                 for o in objects if "name" in o and not (o["name"].endswith("/") and int(o["bytes"]) == 0)]
        return [self.stat(o.url) for o in found]  # each as it is read: a segmented one's parts

    def get_grants(self, url: ObjectUrl) -> list[str]:
        """One temp URL for an object; one per segment for a static large object (as `stat` found it): a temp
        URL signed with a container's key reads no segment in another container, one per segment always works."""
        return [self._temp_url(u, "GET") for u in self._segments.get(url, [url])]

    # -- writing ------------------------------------------------------------------------------

    def ensure_container(self, url: ObjectUrl) -> None:
        with self._translated(f"swift://{url.container}", "making the container"):
            self._connection().put_container(url.container)

    def start_put(self, url: ObjectUrl, size: int, part_size: int) -> Upload:
        if size <= part_size:
            return Upload(url, size, [self._temp_url(url, "PUT")], part_size, "Etag")
        segments = f"{url.container}_segments"
        upload_id = f"{url.key}/{SEGMENTS}/{uuid.uuid4().hex}"
        with self._translated(f"swift://{segments}", "making the segments container"):
            self._connection().put_container(segments)
        self._delete_segments(url, segments, keep=self._manifest_paths(url))  # an interrupted attempt's
        count = (size + part_size - 1) // part_size
        urls = [self._temp_url(ObjectUrl("swift", segments, f"{upload_id}/{n:08d}"), "PUT") for n in range(count)]
        return Upload(url, size, urls, part_size, "Etag", upload_id, {"segments": segments})

    def finish_put(self, upload: Upload, etags: list[str]) -> None:
        if not upload.segmented:
            return
        segments, conn = upload.extra["segments"], self._connection()
        manifest = [{"path": f"/{segments}/{upload.upload_id}/{n:08d}", "etag": etag,
                     "size_bytes": min(upload.part_size, upload.size - n * upload.part_size)}
                    for n, etag in enumerate(etags)]
        with self._translated(upload.url, "making whole"):
            conn.put_object(upload.url.container, upload.url.key, json.dumps(manifest),
                            query_string="multipart-manifest=put")
        # segments of earlier attempts, or of the object this one replaced, are nobody's now (the object is whole
        # whatever happens to them: the next upload of it deletes those left)
        with contextlib.suppress(Exception):
            self._delete_segments(upload.url, segments, keep_upload=upload.upload_id)

    def abort_put(self, upload: Upload) -> None:
        """The segments this upload sent (it was cut short): deleted. Never raises (its caller is failing)."""
        if upload.segmented:
            with contextlib.suppress(Exception):
                self._delete_segments(upload.url, upload.extra["segments"], only_upload=upload.upload_id)

    def _manifest_paths(self, url: ObjectUrl) -> set[str]:
        """The segments (`/<container>/<name>`) the object at `url` is made of now: none when it is no static
        large object or does not exist."""
        conn = self._connection()
        try:
            with self._translated(url, "reading"):
                if conn.head_object(url.container, url.key).get("x-static-large-object", "").lower() != "true":
                    return set()
                _h, body = conn.get_object(url.container, url.key, query_string="multipart-manifest=get")
        except InputMissing:
            return set()
        return {"/" + str(s["name"]).lstrip("/") for s in json.loads(body)}

    def _delete_segments(self, url: ObjectUrl, segments: str, keep: set[str] | frozenset[str] = frozenset(),
                         keep_upload: str | None = None, only_upload: str | None = None) -> None:
        """Delete lando's segments of the object at `url` (`<key>/lando/<upload id>/<n>` in `segments`) but
        those in `keep` (the paths its manifest names) or of the upload `keep_upload`; or, with `only_upload`,
        that upload's alone."""
        conn, prefix = self._connection(), f"{url.key}/{SEGMENTS}/"
        try:
            with self._translated(f"swift://{segments}/{prefix}", "listing the segments"):
                _h, held = conn.get_container(segments, prefix=only_upload + "/" if only_upload else prefix,
                                              full_listing=True)
        except InputMissing:  # no segments container: nothing to delete
            return
        for o in held:
            name = o.get("name", "")
            if not _SEGMENT_NAME.fullmatch(name[len(prefix):]) or f"/{segments}/{name}" in keep or \
                    (keep_upload and name.startswith(keep_upload + "/")):
                continue  # not lando's segment of this object (another object's name may start so), or in use
            with contextlib.suppress(Exception), self._translated(f"swift://{segments}/{name}", "deleting"):
                conn.delete_object(segments, name)

    # -- grants -------------------------------------------------------------------------------

    def _temp_url(self, url: ObjectUrl, method: str) -> str:
        from swiftclient.utils import generate_temp_url

        base, account = self._storage()
        raw = f"{account}/{url.container}/{url.key}"
        signed = generate_temp_url(raw, self.grant_seconds, self._key(url.container), method)
        query = signed[len(raw):].lstrip("?")
        return f"{base}{urllib.parse.quote(raw)}?{query}"

    def _key(self, container: str) -> str:
        """The temp URL key that signs for `container` (see the module doc); never logged."""
        if self.config.temp_url_key:
            return self.config.temp_url_key
        if container in self._keys:
            return self._keys[container]
        conn = self._connection()
        with self._translated(f"swift://{container}", "reading the temp URL key of"):
            account = conn.head_account()
            key = account.get("x-account-meta-temp-url-key") or account.get("x-account-meta-temp-url-key-2")
            if not key:
                held = conn.head_container(container)
                key = held.get("x-container-meta-temp-url-key") or held.get("x-container-meta-temp-url-key-2")
            if not key:
                key = secrets.token_hex(32)
                conn.post_container(container, {"X-Container-Meta-Temp-URL-Key-2": key})
        self._keys[container] = key
        return key
