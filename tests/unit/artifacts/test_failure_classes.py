"""Which exceptions count as storage failures, and the exact words an ArtifactError gives for them."""

from __future__ import annotations

import errno

import pytest

from skyflow.artifacts.failures import describe_failure, is_storage_failure, storage_error
from skyflow.errors import ArtifactError


def library_error(module: str, name: str = "ClientError") -> type[Exception]:
    """An exception class as a storage library defines it (recognised by its module only)."""
    return type(name, (Exception,), {"__module__": module})


@pytest.mark.parametrize("module", ["botocore.exceptions", "aiohttp.client_exceptions", "google.api_core.exceptions",
                                    "azure.core.exceptions", "s3fs", "fsspec.exceptions", "urllib3.exceptions"])
def test_storage_libraries_exceptions_are_storage_failures(module: str) -> None:
    assert is_storage_failure(library_error(module)("boom")) is True


@pytest.mark.parametrize("exc", [OSError("x"), FileNotFoundError("x"), TimeoutError(), ConnectionResetError()])
def test_os_and_timeout_errors_are_storage_failures(exc: BaseException) -> None:
    assert is_storage_failure(exc) is True


@pytest.mark.parametrize("exc", [ValueError("x"), KeyError("k"), RuntimeError("x"),
                                 library_error("skyflow.artifacts.store")("x"),
                                 library_error("botocorex.exceptions")("x")])
def test_other_exceptions_are_bugs_not_storage_failures(exc: BaseException) -> None:
    assert is_storage_failure(exc) is False


def test_an_exception_with_no_message_is_named_without_a_dangling_colon() -> None:
    assert describe_failure(RuntimeError()) == "RuntimeError"
    assert describe_failure(library_error("botocore.exceptions", "NoCredentialsError")()) == "NoCredentialsError"


@pytest.mark.parametrize("message", ["An error occurred (NoSuchBucket): bucket DATA-BOX",
                                     "checksum mismatch on part 7", "bad request"])
def test_an_unclassified_failure_is_the_library_words_verbatim(message: str) -> None:
    error = library_error("botocore.exceptions")(message)
    assert describe_failure(error) == f"ClientError: {message}"


def test_exceptions_without_file_names_are_described() -> None:
    error = library_error("google.api_core.exceptions", "Forbidden")("403 GET: caller lacks storage.objects.get")
    assert describe_failure(error) == (
        "permission denied; check the credentials and the bucket's policy "
        "(Forbidden: 403 GET: caller lacks storage.objects.get)")
    assert describe_failure(ValueError("Connection pool is full")) == (
        "the store cannot be reached (after the library's retries); is it up? (ValueError: Connection pool is full)")


def test_the_second_file_name_is_not_read_as_the_librarys_words() -> None:
    error = OSError(errno.EXDEV, "Invalid cross-device link", "/tmp/staged", None, "/store/blobs/403/connect")
    assert describe_failure(error) == (
        "OSError: [Errno 18] Invalid cross-device link: '/tmp/staged' -> '/store/blobs/403/connect'")


def test_a_bytes_file_name_does_not_break_the_description() -> None:
    error = OSError(errno.EIO, "Input/output error", b"/store/blobs/ab/abcdef")
    assert describe_failure(error) == "OSError: [Errno 5] Input/output error: b'/store/blobs/ab/abcdef'"


@pytest.mark.parametrize(("exc", "start"), [
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "/s/k"), "not found ("),
    (OSError(errno.ENOSPC, "No space left on device"), "no space left on the device; "),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), "no space left on the device; "),
    (TimeoutError("read"), "the store cannot be reached"),
    (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), "the store cannot be reached"),
])
def test_each_kind_of_failure_says_what_to_do(exc: BaseException, start: str) -> None:
    assert describe_failure(exc).startswith(start)


def test_storage_error_names_the_artifact_the_uri_and_the_action() -> None:
    error = storage_error(FileNotFoundError(errno.ENOENT, "No such file or directory", "/s/k"),
                          uri="s3://bucket/k", action="reading", artifact="model")
    assert isinstance(error, ArtifactError)
    assert error.artifact == "model" and error.uri == "s3://bucket/k"
    assert error.message == ("artifact 'model' at s3://bucket/k: reading failed: "
                             "not found (FileNotFoundError: [Errno 2] No such file or directory: '/s/k')")


def test_storage_error_without_an_artifact_names_only_the_uri() -> None:
    error = storage_error(TimeoutError(), uri="gs://b/k", action="writing")
    assert error.artifact is None
    assert error.message == ("gs://b/k: writing failed: the store cannot be reached (after the library's retries); "
                             "is it up? (TimeoutError)")


def test_a_bytes_file_name_holding_a_digest_is_not_read_as_permission_denied() -> None:
    error = OSError(errno.EIO, "Input/output error", b"/store/blobs/ab/403")
    assert not describe_failure(error).startswith("permission denied")
