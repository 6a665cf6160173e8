//! The project's keys are standard files: OpenSSL 3.0 and python `cryptography` read the keys
//! `firma init` writes, and firma reads keys OpenSSL generated.

mod common;

use std::process::Command;

use common::{World, stdout};

const KEYS: [&str; 2] = ["authority", "audit"];

fn openssl_pubout(key: &std::path::Path) -> String {
    let out = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(key)
        .output()
        .expect("openssl is installed (.ci/run installs it)");
    assert!(
        out.status.success(),
        "openssl pkey -in {} -pubout failed: {}",
        key.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn openssl_derives_the_same_public_key_as_the_pub_file() {
    let world = World::new();
    world.init(&[]);
    for name in KEYS {
        let key = world.project_dir().join(format!("{name}.key"));
        let public =
            std::fs::read_to_string(world.project_dir().join(format!("{name}.pub"))).unwrap();
        assert_eq!(openssl_pubout(&key), public, "{name}.key");
    }
}

#[test]
fn python_cryptography_reads_the_keys() {
    let world = World::new();
    world.init(&[]);
    let script = r#"
import sys
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
key = serialization.load_pem_private_key(open(sys.argv[1], 'rb').read(), password=None)
assert isinstance(key, Ed25519PrivateKey), type(key)
pub = key.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
sys.stdout.write(pub.decode())
"#;
    for name in KEYS {
        let key = world.project_dir().join(format!("{name}.key"));
        let out = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(&key)
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "python cryptography refused {}: {}",
            key.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let public =
            std::fs::read_to_string(world.project_dir().join(format!("{name}.pub"))).unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), public, "{name}.key");
    }
}

#[test]
fn keys_generated_by_openssl_are_accepted() {
    let world = World::new();
    world.init(&[]);
    for name in KEYS {
        let key = world.project_dir().join(format!("{name}.key"));
        let status = Command::new("openssl")
            .args(["genpkey", "-algorithm", "ed25519", "-out"])
            .arg(&key)
            .status()
            .unwrap();
        assert!(status.success());
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(
            world.project_dir().join(format!("{name}.pub")),
            openssl_pubout(&key),
        )
        .unwrap();
    }
    let out = world.run(&["doctor", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    for check in ["authority key", "audit key"] {
        let found = report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == check)
            .unwrap_or_else(|| panic!("doctor has a {check:?} check: {report}"));
        assert_eq!(found["status"], "ok", "{check}: {found}");
    }
}
