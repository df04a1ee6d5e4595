"""Signed bundles (issue 13): ed25519 keys, signatures over the manifest digest, trusted keys on the device."""

import json
import shutil
import stat

import numpy as np
import pytest

from pcl_edge.bundle import BundleError, seal, verify_bundle
from pcl_edge.bundle.signing import keygen, load_trusted_keys, sign_bundle
from pcl_edge.runtime import Router

pytest.importorskip("cryptography", reason="signing needs the 'cryptography' package")


@pytest.fixture
def keys(tmp_path):
    (tmp_path / "keys").mkdir()
    return {name: keygen(tmp_path / "keys" / name) for name in ("release", "next", "rogue")}


def _copy(bundles, tmp_path, name="b"):  # noqa: F811
    shutil.copytree(bundles / "v1", tmp_path / name)
    return tmp_path / name


def test_keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites(keys, tmp_path):
    key, pub = keys["release"]
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and b"PUBLIC KEY" in pub.read_bytes()
    with pytest.raises(BundleError, match="never overwritten"):
        keygen(tmp_path / "keys" / "release")


def test_signed_bundles_verify_and_everything_else_is_refused(bundles, keys, tmp_path):  # noqa: F811
    b = _copy(bundles, tmp_path)
    trusted = load_trusted_keys(keys["release"][1])
    with pytest.raises(BundleError, match="not signed"):
        verify_bundle(b, trusted)
    sign_bundle(b, keys["release"][0])
    assert verify_bundle(b, trusted)["bundle_version"] == 2
    assert verify_bundle(b)  # without trusted keys a signature is not required
    with pytest.raises(BundleError, match="none of them trusted"):
        verify_bundle(b, load_trusted_keys(keys["rogue"][1]))
    # an attacker edits a model and re-seals the manifest: every sha256 matches again, the signature does not
    m = json.loads((b / "manifest.json").read_text())
    model = b / m["tasks"][0]["model"]
    model.write_bytes(model.read_bytes() + b"\0")
    import hashlib

    m["tasks"][0]["sha256"] = hashlib.sha256(model.read_bytes()).hexdigest()
    m["tasks"][0]["size"] = model.stat().st_size
    (b / "manifest.json").write_text(json.dumps(seal({k: v for k, v in m.items() if k != "manifest_sha256"})))
    verify_bundle(b)  # the seal alone is satisfied
    with pytest.raises(BundleError, match="does not verify"):
        verify_bundle(b, trusted)


def test_key_rotation_trusts_every_key_in_a_directory(bundles, keys, tmp_path):  # noqa: F811
    b = _copy(bundles, tmp_path)
    sign_bundle(b, keys["next"][0])
    trusted_dir = tmp_path / "trusted"
    trusted_dir.mkdir()
    for name in ("release", "next"):
        shutil.copy(keys[name][1], trusted_dir)
    assert len(load_trusted_keys(trusted_dir)) == 2 and verify_bundle(b, load_trusted_keys(trusted_dir))


def test_a_tar_is_signed_by_repacking_it(bundles, keys, tmp_path):  # noqa: F811
    from pcl_edge.export import export_bundle

    export_bundle(bundles / "run", tmp_path / "b.tar", sign_key=keys["release"][0])
    trusted = load_trusted_keys(keys["release"][1])
    verify_bundle(tmp_path / "b.tar", trusted)
    sign_bundle(tmp_path / "b.tar", keys["next"][0])  # a second signature, for the next key
    verify_bundle(tmp_path / "b.tar", load_trusted_keys(keys["next"][1]))
    verify_bundle(tmp_path / "b.tar", trusted)


def test_a_device_with_trusted_keys_refuses_at_start_and_on_activation(bundles, keys, tmp_path):  # noqa: F811
    trusted = load_trusted_keys(keys["release"][1])
    unsigned = _copy(bundles, tmp_path, "unsigned")
    with pytest.raises(BundleError, match="not signed"):
        Router(unsigned, backend="ort", trusted_keys=trusted)
    good = _copy(bundles, tmp_path, "good")
    sign_bundle(good, keys["release"][0])
    r = Router(good, backend="ort", trusted_keys=trusted)
    rogue = _copy(bundles, tmp_path, "rogue")
    sign_bundle(rogue, keys["rogue"][0])
    for bad in (unsigned, rogue):
        with pytest.raises(BundleError):
            r.activate(bad)
        assert r.version.root == good  # the old bundle keeps serving
    assert r.infer(1, np.zeros((1, 1, 8, 8), np.float32)).logits.shape == (1, 2)


def test_cli_keygen_sign_and_verify(bundles, tmp_path, capsys):  # noqa: F811
    from pcl_edge.cli import main

    b = _copy(bundles, tmp_path)
    assert main(["-q", "keygen", str(tmp_path / "k")]) == 0
    assert main(["-q", "bundle", "verify", str(b), "--trusted-key", str(tmp_path / "k.pub")]) == 2
    assert "not signed" in capsys.readouterr().err
    assert main(["-q", "bundle", "sign", str(b), "--key", str(tmp_path / "k.key")]) == 0
    assert main(["-q", "bundle", "verify", str(b), "--trusted-key", str(tmp_path / "k.pub")]) == 0
    assert "signature by a trusted key verifies" in capsys.readouterr().out
