//! `skiff image import|ls|rm` on a real image store.

use skiff_e2e::{image_fixture, skiff_bin};

fn skiff(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(skiff_bin()).args(args).output().expect("run skiff");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn import_list_and_remove_an_oci_layout() {
    let dir = tempfile::Builder::new().prefix("skiff-e2e-image-").tempdir().expect("tempdir");
    let layout = image_fixture::busybox_layout(&dir.path().join("layout"), "docker.io/library/busybox:1.36");
    let data = dir.path().join("data");
    let data = data.to_str().unwrap_or_default();

    let (ok, out, err) = skiff(&["image", "import", layout.to_str().unwrap_or_default(), "--data-dir", data]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "imported docker.io/library/busybox:1.36");

    let (ok, out, err) = skiff(&["image", "ls", "--data-dir", data]);
    assert!(ok, "{err}");
    let line = out.lines().find(|l| l.starts_with("docker.io/library/busybox:1.36")).unwrap_or_default().to_string();
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cols.len(), 4, "{out}");
    assert_eq!(cols[1].len(), 12, "a short image ID: {out}");

    let (ok, out, err) = skiff(&["image", "rm", "busybox:1.36", "--data-dir", data]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "removed docker.io/library/busybox:1.36");
    let (_, out, _) = skiff(&["image", "ls", "--data-dir", data]);
    assert_eq!(out.lines().count(), 1, "only the header is left: {out}");

    let (ok, _, err) = skiff(&["image", "rm", "nope:1", "--data-dir", data]);
    assert!(!ok);
    assert!(err.contains("nope"), "{err}");
}
