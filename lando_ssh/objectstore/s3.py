"""S3 (AWS, Swift's s3api, Ceph, MinIO) through botocore: SigV4 presigned URLs are the grants; a large
upload is a multipart upload this server starts and completes, the VM sending the parts in between (an
incomplete multipart upload is never an object; one left by an earlier attempt is aborted first, one cut short
is aborted at once), its part size kept in the object's metadata.

A multipart object's ETag (`<MD5 of the parts' MD5s>-N`) follows from its bytes at its part size only: `stat`
gives the part size when something says it (one part, lando-ssh's metadata, the store's HEAD of part 1), else
the likely ones, each of which the VM tries (see docs/object-storage.md)."""
from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from typing import Any

from lando_ssh.config import S3StoreConfig
from lando_ssh.errors import InputMissing, ObjectStoreRefused, ObjectStoreUnavailable
from lando_ssh.objectstore.stores import ObjectInfo, Upload
from lando_ssh.objectstore.urls import ObjectUrl

MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # SigV4's limit
MiB = 1024 * 1024
#: user metadata (x-amz-meta-) on a multipart object lando-ssh uploads: its part size, so it can be checked when read
PART_SIZE_META = "lando-part-size"
#: part sizes S3 clients cut at by default, tried (after the store's own) for an object whose part size no one
#: says: AWS CLI/boto3 8 MiB, the S3 minimum 5 MiB (rclone, Swift's s3api clients), MinIO's mc 16 MiB, s3cmd 15 MiB
USUAL_PART_SIZES = tuple(n * MiB for n in (8, 5, 16, 15, 10, 32, 50, 64, 100, 128, 256, 512, 1024))
_MULTIPART_ETAG = re.compile(r"[0-9a-f]{32}-([0-9]+)")

# botocore's debug log shows what it signs: its errors are said here, translated, instead
logging.getLogger("botocore").setLevel(logging.WARNING)


class S3Store:
    scheme = "s3"

    def __init__(self, config: S3StoreConfig, grant_seconds: float, part_size: int = 64 * MiB,
                 project: str | None = None):
        self.config, self.project = config, project  # project: whose credentials (object_store.projects)
        self.grant_seconds = int(min(grant_seconds, MAX_PRESIGN_SECONDS))
        self.part_size = part_size  # this server's uploads' (object_store.segment_mb)
        self._client: Any = None

    def describe(self) -> str:
        whose = f", project {self.project}'s credentials" if self.project else ""
        return f"S3 at {self.config.endpoint or 'AWS'} (access key {self.config.access_key}{whose})"

    def _s3(self) -> Any:
        if self._client is None:
            import botocore.session
            from botocore.config import Config as BotoConfig

            session = botocore.session.get_session()
            self._client = session.create_client(
                "s3", endpoint_url=self.config.endpoint, region_name=self.config.region,
                aws_access_key_id=self.config.access_key, aws_secret_access_key=self.config.secret_key,
                config=BotoConfig(signature_version="s3v4", s3={"addressing_style": "path"},
                                  retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=30,
                                  read_timeout=60))
        return self._client

    @contextlib.contextmanager
    def _translated(self, url: ObjectUrl | str, doing: str) -> Iterator[None]:
        """botocore's exceptions as ours (the one place), each naming the object."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as e:
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = e.response.get("Error", {}).get("Code", "")
            if status == 404 or code in ("NoSuchKey", "NoSuchBucket", "404"):
                raise InputMissing(f"{url} does not exist ({self.describe()})") from None
            if status in (401, 403):
                raise ObjectStoreRefused(f"{self.describe()} refused lando-ssh's credential {doing} {url} "
                                         f"(HTTP {status} {code}); check object_store.s3 and the key's rights")\
                    from None
            if code in ("QuotaExceeded", "EntityTooLarge") or status == 413:
                raise ObjectStoreRefused(f"{self.describe()} refused {url}: the bucket's quota is full or the "
                                         f"object is too large ({code or status})") from None
            if status is None or status >= 500:
                raise ObjectStoreUnavailable(f"{self.describe()} failed {doing} {url}: {code or status}") from None
            raise ObjectStoreRefused(f"{self.describe()} answered HTTP {status} {code} {doing} {url}") from None
        except BotoCoreError as e:
            raise ObjectStoreUnavailable(f"{self.describe()} cannot be reached {doing} {url}: {e}") from None

    # -- reading ------------------------------------------------------------------------------

    def stat(self, url: ObjectUrl) -> ObjectInfo:
        with self._translated(url, "reading"):
            head = self._s3().head_object(Bucket=url.container, Key=url.key)
        size, etag = int(head["ContentLength"]), (head.get("ETag") or "").strip('"') or None
        if etag is None or head.get("ServerSideEncryption") == "aws:kms":  # a KMS-encrypted object's is no MD5
            return ObjectInfo(url, size)
        if len(etag) == 32 and "-" not in etag:
            return ObjectInfo(url, size, etag, "md5")
        multipart = _MULTIPART_ETAG.fullmatch(etag)
        if not multipart:
            return ObjectInfo(url, size)
        count = int(multipart[1])
        said = self._said_part_size(url, head.get("Metadata") or {}, size, count)
        if said is not None:
            return ObjectInfo(url, size, etag, "s3multipart", part_sizes=(said,), part_size_known=True)
        likely = [p for p in dict.fromkeys((self.part_size, *USUAL_PART_SIZES)) if _fits(p, size, count)]
        return ObjectInfo(url, size, etag, "s3multipart", part_sizes=tuple(likely))

    def _said_part_size(self, url: ObjectUrl, metadata: dict[str, str], size: int, count: int) -> int | None:
        """A multipart object's part size, when something says it: its one part; lando-ssh's metadata; the
        store's HEAD of part 1 (AWS, Ceph, MinIO; Swift's s3api before 2.31 refuses it)."""
        if count == 1:
            return size
        with contextlib.suppress(ValueError):
            said = int(metadata.get(PART_SIZE_META, ""))
            if _fits(said, size, count):
                return said
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            first = int(self._s3().head_object(Bucket=url.container, Key=url.key, PartNumber=1)["ContentLength"])
        except (BotoCoreError, ClientError, KeyError, ValueError):
            return None
        return first if _fits(first, size, count) else None

    def listing(self, url: ObjectUrl) -> list[ObjectInfo]:
        prefix = url.as_prefix()
        found: list[ObjectInfo] = []
        with self._translated(prefix, "listing"):
            pages = self._s3().get_paginator("list_objects_v2").paginate(Bucket=url.container, Prefix=prefix.key)
            for page in pages:
                for o in page.get("Contents", []):
                    if o["Key"].endswith("/") and int(o["Size"]) == 0:
                        continue
                    key, etag = ObjectUrl("s3", url.container, o["Key"]), (o.get("ETag") or "").strip('"')
                    # a plain object's MD5 is in the listing; a multipart one's part size needs its HEAD
                    found.append(ObjectInfo(key, int(o["Size"]), etag, "md5") if len(etag) == 32
                                 else self.stat(key))
        return found

    def get_grants(self, url: ObjectUrl) -> list[str]:
        return [str(self._s3().generate_presigned_url("get_object", Params={"Bucket": url.container, "Key": url.key},
                                                      ExpiresIn=self.grant_seconds))]

    # -- writing ------------------------------------------------------------------------------

    def ensure_container(self, url: ObjectUrl) -> None:
        s3 = self._s3()
        try:
            with self._translated(f"s3://{url.container}", "reading the bucket"):
                s3.head_bucket(Bucket=url.container)
        except InputMissing:
            with self._translated(f"s3://{url.container}", "making the bucket"):
                s3.create_bucket(Bucket=url.container)

    def start_put(self, url: ObjectUrl, size: int, part_size: int) -> Upload:
        s3, where = self._s3(), {"Bucket": url.container, "Key": url.key}
        if size <= part_size:
            put = s3.generate_presigned_url("put_object", Params=where, ExpiresIn=self.grant_seconds)
            return Upload(url, size, [str(put)], part_size, "Content-MD5")
        with self._translated(url, "starting the upload of"):
            for old in s3.list_multipart_uploads(Bucket=url.container, Prefix=url.key).get("Uploads", []):
                if old.get("Key") == url.key:  # an earlier attempt's: its parts are nobody's
                    s3.abort_multipart_upload(**where, UploadId=old["UploadId"])
            upload_id = s3.create_multipart_upload(**where, Metadata={PART_SIZE_META: str(part_size)})["UploadId"]
        count = (size + part_size - 1) // part_size
        urls = [str(s3.generate_presigned_url("upload_part", Params={**where, "UploadId": upload_id,
                                                                      "PartNumber": n + 1},
                                              ExpiresIn=self.grant_seconds)) for n in range(count)]
        return Upload(url, size, urls, part_size, "Content-MD5", upload_id)

    def finish_put(self, upload: Upload, etags: list[str]) -> None:
        if not upload.segmented:
            return
        parts = [{"PartNumber": n + 1, "ETag": f'"{etag}"'} for n, etag in enumerate(etags)]
        with self._translated(upload.url, "making whole"):
            self._s3().complete_multipart_upload(Bucket=upload.url.container, Key=upload.url.key,
                                                 UploadId=upload.upload_id, MultipartUpload={"Parts": parts})

    def abort_put(self, upload: Upload) -> None:
        """The multipart upload this one started, aborted (it was cut short): S3 drops its parts. Never raises."""
        if upload.segmented:
            with contextlib.suppress(Exception), self._translated(upload.url, "aborting the upload of"):
                self._s3().abort_multipart_upload(Bucket=upload.url.container, Key=upload.url.key,
                                                  UploadId=upload.upload_id)


def _fits(part_size: int, size: int, count: int) -> bool:
    """`size` bytes cut at `part_size` make `count` parts."""
    return part_size > 0 and (count - 1) * part_size < size <= count * part_size
