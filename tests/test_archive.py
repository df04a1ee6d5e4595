"""Bundle archives under attack (issue 22 item 2): verified before anything is written, bounded, one format, only
the listed members extracted, nothing left behind on failure."""

import gzip
import io
import json
import shutil
import subprocess
import tarfile

import pytest

from pcl_edge.bundle import archive, pack_bundle
from pcl_edge.bundle.archive import unpack_bundle
from pcl_edge.bundle.manifest import BundleError, seal


@pytest.fixture
def keys(tmp_path):
    pytest.importorskip("cryptography")
    from pcl_edge.bundle.signing import keygen, load_trusted_keys

    key, pub = keygen(tmp_path / "keys" / "release")
    return key, load_trusted_keys(pub)


@pytest.fixture
def signed_tar(bundles, keys, tmp_path):
    from pcl_edge.bundle.signing import sign_dir

    shutil.copytree(bundles / "v1", tmp_path / "b")
    sign_dir(tmp_path / "b", keys[0])
    pack_bundle(tmp_path / "b", tmp_path / "b.tar")
    return tmp_path / "b.tar"


def repack(src_tar, out, extra=(), compress=False, drop=()):
    """``src_tar``'s members (minus ``drop``) plus ``extra`` (name, bytes) members, as a plain or gzip tar."""
    with tarfile.open(src_tar) as src, tarfile.open(out, "w:gz" if compress else "w") as dst:
        for m in src.getmembers():
            if m.name not in drop:
                dst.addfile(m, src.extractfile(m) if m.isfile() else None)
        for name, data in extra:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))
    return out


def test_a_genuine_bundle_unpacks_with_only_its_listed_files(signed_tar, keys, tmp_path):
    out = unpack_bundle(signed_tar, tmp_path / "u", keys[1])
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert names == sorted(["manifest.json", "signatures.json"] + [f"models/task_{i:02d}.onnx" for i in range(1, 6)])


def test_a_gzip_bomb_is_refused_before_a_byte_is_inflated(signed_tar, keys, tmp_path, monkeypatch):
    """A genuine signed bundle repacked as gzip with an extra, unlisted 256 MB member (zeros: a bomb)."""
    bomb = tmp_path / "bomb.tar"
    with tarfile.open(signed_tar) as src, open(bomb, "wb") as raw, \
            gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1) as gz, tarfile.open(fileobj=gz, mode="w") as dst:
        for m in src.getmembers():
            dst.addfile(m, src.extractfile(m) if m.isfile() else None)
        info = tarfile.TarInfo("padding.bin")
        info.size = 256 << 20
        dst.addfile(info, io.BytesIO(bytes(256 << 20)))
    assert bomb.stat().st_size < signed_tar.stat().st_size + (2 << 20)  # 256 MB of zeros in under 2 MiB
    scanned = []
    monkeypatch.setattr(archive, "_members", lambda *a: scanned.append(a) or {})
    with pytest.raises(BundleError, match="gzip-compressed; bundles are plain .tar"):
        unpack_bundle(bomb, tmp_path / "u", keys[1])
    assert scanned == [] and not (tmp_path / "u").exists()  # refused from its first bytes: no header was read


def test_an_unlisted_member_is_never_written(signed_tar, keys, tmp_path):
    extra = repack(signed_tar, tmp_path / "extra.tar", extra=[("models/evil.onnx", b"x" * (4 << 20)),
                                                               ("../outside.txt", b"y")])
    out = unpack_bundle(extra, tmp_path / "u", keys[1])
    assert not (out / "models" / "evil.onnx").exists() and not (tmp_path / "outside.txt").exists()


def test_the_signature_is_checked_before_any_model_is_written(bundles, keys, tmp_path, monkeypatch):
    pack_bundle(bundles / "v1", tmp_path / "unsigned.tar")
    written = []
    monkeypatch.setattr(archive, "_extract", lambda *a: written.append(a))
    with pytest.raises(BundleError, match="not signed"):
        unpack_bundle(tmp_path / "unsigned.tar", tmp_path / "u", keys[1])
    assert written == [] and not (tmp_path / "u").exists()


def test_a_sparse_member_is_refused(tmp_path):
    if shutil.which("tar") is None:
        pytest.skip("needs GNU tar to write a sparse member")
    (tmp_path / "src").mkdir()
    with open(tmp_path / "src" / "manifest.json", "wb") as fh:
        fh.truncate(64 << 20)  # a hole: GNU tar stores it as a sparse member
    subprocess.run(["tar", "--sparse", "-cf", str(tmp_path / "s.tar"), "-C", str(tmp_path / "src"), "manifest.json"],
                   check=True)
    with tarfile.open(tmp_path / "s.tar") as t:
        if not t.getmembers()[0].issparse():
            pytest.skip("this tar did not write a sparse member (not GNU tar)")
    with pytest.raises(BundleError, match="sparse file"):
        unpack_bundle(tmp_path / "s.tar", tmp_path / "u")
    assert not (tmp_path / "u").exists()


def test_a_file_of_another_size_than_declared_is_refused_before_writing(bundles, tmp_path):
    shutil.copytree(bundles / "v1", tmp_path / "b")
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    m["tasks"][0]["size"] += 1
    (tmp_path / "b" / "manifest.json").write_text(json.dumps(seal({k: v for k, v in m.items()
                                                                   if k != "manifest_sha256"})))
    pack_bundle(tmp_path / "b", tmp_path / "b.tar")
    with pytest.raises(BundleError, match="the manifest says"):
        unpack_bundle(tmp_path / "b.tar", tmp_path / "u")
    assert not (tmp_path / "u").exists()


@pytest.mark.parametrize("what,match", [
    ("too-many", "more than 4096 members"),
    ("twice", "appears twice"),
    ("link", "link or device"),
    ("huge-manifest", "manifest.json is .* bytes"),
])
def test_hostile_archives_are_refused(bundles, tmp_path, what, match):
    pack_bundle(bundles / "v1", tmp_path / "b.tar")
    out = tmp_path / "h.tar"
    if what == "too-many":
        repack(tmp_path / "b.tar", out, extra=[(f"x/{i}", b"") for i in range(4100)])
    elif what == "twice":
        repack(tmp_path / "b.tar", out, extra=[("models/task_01.onnx", b"other")])
    elif what == "link":
        with tarfile.open(out, "w") as t:
            info = tarfile.TarInfo("manifest.json")
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            t.addfile(info)
    else:
        repack(tmp_path / "b.tar", out, drop=("manifest.json",),
               extra=[("manifest.json", b" " * (17 << 20))])
    with pytest.raises(BundleError, match=match):
        unpack_bundle(out, tmp_path / "u")
    assert not (tmp_path / "u").exists()


def test_a_failed_unpack_leaves_no_directory(bundles, tmp_path, monkeypatch):
    pack_bundle(bundles / "v1", tmp_path / "b.tar")
    calls = []
    real = archive._extract

    def full_disk(*a):
        calls.append(a)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(*a)

    monkeypatch.setattr(archive, "_extract", full_disk)
    with pytest.raises(OSError, match="No space left"):
        unpack_bundle(tmp_path / "b.tar", tmp_path / "work" / ".u-1234")
    assert list((tmp_path / "work").iterdir()) == []


def test_a_huge_extended_header_is_refused_before_tarfile_reads_it(tmp_path, monkeypatch):
    """tarfile reads a pax header whole into memory: one of 32 MiB is refused from its raw header, unread."""
    with tarfile.open(tmp_path / "pax.tar", "w", format=tarfile.PAX_FORMAT) as t:
        info = tarfile.TarInfo("manifest.json")
        info.pax_headers = {"comment": "x" * (32 << 20)}
        info.size = 2
        t.addfile(info, io.BytesIO(b"{}"))
    parsed = []
    monkeypatch.setattr(archive, "_members", lambda *a: parsed.append(a) or {})
    with pytest.raises(BundleError, match="extended header"):
        unpack_bundle(tmp_path / "pax.tar", tmp_path / "u")
    assert parsed == [] and not (tmp_path / "u").exists()


def _manifest_edit(edit):
    def apply(m):
        edit(m)
        return seal({k: v for k, v in m.items() if k != "manifest_sha256"})
    return apply


@pytest.mark.parametrize("edit,match", [
    (lambda m: m["tasks"].append("not a task"), "not a JSON object"),
    (lambda m: m["tasks"][0].update(model="manifest.json"), "leaves the bundle or is not a plain"),
    (lambda m: m["tasks"][0].update(model="../../escape.onnx"), "leaves the bundle"),
    (lambda m: m["tasks"][1].update(model=m["tasks"][0]["model"]), "listed twice"),
    (lambda m: m["tasks"][1].update(model=m["tasks"][0]["model"] + "/x"), "also a directory"),
    (lambda m: m["tasks"][0].update(id=True), "not an integer"),
    (lambda m: m["tasks"][0].update(model=["a"]), "non-empty string"),
    (lambda m: m["tasks"][0]["input"].update(shape="big"), "input shape"),
    (lambda m: m.update(bundle_version="2"), "bundle_version"),
], ids=["task-not-object", "model-is-manifest", "path-escapes", "path-twice", "path-prefix", "bool-id",
        "model-not-string", "shape-not-list", "version-not-int"])
def test_a_hostile_manifest_is_a_bundle_error_not_a_crash(bundles, tmp_path, edit, match):
    shutil.copytree(bundles / "v1", tmp_path / "b")
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    (tmp_path / "b" / "manifest.json").write_text(json.dumps(_manifest_edit(edit)(m)))
    pack_bundle(tmp_path / "b", tmp_path / "b.tar")
    with pytest.raises(BundleError, match=match):
        unpack_bundle(tmp_path / "b.tar", tmp_path / "u")
    assert not (tmp_path / "u").exists()


@pytest.mark.parametrize("sigs", [b"[" * 100000 + b"]" * 100000, b'[{"key_id": ["x"], "signature": 1}]', b"{}"])
def test_hostile_signatures_are_a_bundle_error(bundles, keys, tmp_path, sigs):
    shutil.copytree(bundles / "v1", tmp_path / "b")
    (tmp_path / "b" / "signatures.json").write_bytes(sigs)
    pack_bundle(tmp_path / "b", tmp_path / "b.tar")
    with pytest.raises(BundleError):
        unpack_bundle(tmp_path / "b.tar", tmp_path / "u", keys[1])
