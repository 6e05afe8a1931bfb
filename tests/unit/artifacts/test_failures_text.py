"""How storage failures are described: by the library's words, not by what a path or digest holds."""

from __future__ import annotations

import errno

from skyflow.artifacts.failures import describe_failure


def test_a_digest_holding_403_in_a_path_is_not_permission_denied() -> None:
    path = "/store/blobs/sha256/28/288fff960ea11d954e20c540689a6122c4ffa1abed07ad4d40356a6e4fd242b0"
    described = describe_failure(NotADirectoryError(errno.ENOTDIR, "Not a directory", path))
    assert described.startswith("NotADirectoryError: "), described
    assert not describe_failure(OSError(errno.EIO, "I/O error", "/data/connect/timeout.txt")).startswith("the store")


def test_the_librarys_own_words_still_classify() -> None:
    assert describe_failure(OSError("An error occurred (403) when calling the PutObject operation: Forbidden")
                            ).startswith("permission denied")
    assert describe_failure(OSError("AccessDenied: no")).startswith("permission denied")
    assert describe_failure(OSError("Could not connect to the endpoint URL")).startswith("the store cannot be reached")
    assert describe_failure(PermissionError(errno.EACCES, "Permission denied", "/x")).startswith("permission denied")


def test_a_failure_on_a_file_descriptor_keeps_the_whole_text() -> None:
    """OSError.filename is an int for a failure on a file descriptor (os.stat(12345))."""
    assert describe_failure(OSError(errno.EBADF, "Bad file descriptor", 12345)) == (
        "OSError: [Errno 9] Bad file descriptor: 12345")
