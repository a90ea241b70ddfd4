//! The image: the top-level `Dockerfile`'s final stage built with podman from the workspace's
//! binaries (no registry is reachable, so the builder and runtime stages are replaced by
//! named build contexts: the binaries, and a runtime base made of this Debian machine's own
//! iptables, `sleep` and libraries), then checked for Linkerd's layout, entrypoint, user and
//! environment; the proxy inside answers `/ready` where containers can run here. And the
//! entrypoint name the injector relies on, run directly.
//!
//! Needs root and `podman` (Debian's package; CI installs it). Skipped with a message where
//! they are missing; the container run is skipped with the runtime's error where containers
//! cannot start (e.g. a cgroup setup crun refuses).

use linkerd_tests::{
    free_addr, holds,
    netns::{has_tool, INJECTED_PROXY_INIT_ARGS},
    workspace_bin,
};
use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

/// The files the image must hold (`init-containers.md` section 7), and whether each is
/// executable.
const LAYOUT: [(&str, bool); 8] = [
    ("usr/lib/linkerd/linkerd2-proxy", true),
    ("usr/lib/linkerd/linkerd2-proxy-identity", true),
    ("usr/lib/linkerd/linkerd2-proxy-init", true),
    ("usr/lib/linkerd/linkerd2-network-validator", true),
    ("usr/lib/linkerd/linkerd-await", true),
    ("usr/lib/linkerd/linkerd2-proxy-version.txt", false),
    ("usr/lib/linkerd/LICENSE", false),
    ("usr/bin/sleep", true),
];

/// Runs a command; its output, or a panic naming it.
fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(out.status.success(), "{cmd:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Removes what the test made, even when it fails.
struct Cleanup {
    dir: PathBuf,
    images: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for image in &self.images {
            let _ = Command::new("podman")
                .args(["image", "umount", image])
                .output();
            let _ = Command::new("podman").args(["rmi", "-f", image]).output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The Dockerfile's `runtime` stage made here: `image/runtime-rootfs.sh` (what the stage runs
/// on Debian) run on this Debian machine for the workspace's binaries, imported as `image`.
fn runtime_base(dir: &Path, image: &str, lib: &Path) {
    let root = dir.join("runtime");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../image/runtime-rootfs.sh");
    let mut cmd = Command::new(script);
    cmd.arg(&root);
    for bin in TOOLS {
        cmd.arg(lib.join(bin));
    }
    ok(&mut cmd);
    let tar = dir.join("runtime.tar");
    ok(Command::new("tar")
        .arg("--xattrs")
        .arg("--xattrs-include=security.capability")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg("."));
    ok(Command::new("podman").arg("import").arg(&tar).arg(image));
}

/// The binaries the image holds.
const TOOLS: [&str; 4] = [
    "linkerd2-proxy",
    "linkerd2-proxy-init",
    "linkerd2-network-validator",
    "linkerd-await",
];

/// The `build` stage's output: `/out` with the workspace's binaries where the Dockerfile's
/// builder puts them.
fn build_context(dir: &Path) -> PathBuf {
    let ctx = dir.join("build");
    let lib = ctx.join("out/usr/lib/linkerd");
    std::fs::create_dir_all(&lib).unwrap();
    let proxy = linkerd_tests::proxy_bin();
    std::fs::copy(&proxy, lib.join("linkerd2-proxy")).unwrap();
    for tool in [
        "linkerd2-proxy-init",
        "linkerd2-network-validator",
        "linkerd-await",
    ] {
        std::fs::copy(workspace_bin(tool), lib.join(tool)).unwrap();
    }
    std::os::unix::fs::symlink("linkerd2-proxy", lib.join("linkerd2-proxy-identity")).unwrap();
    let version = ok(Command::new(&proxy).arg("--version"));
    std::fs::write(lib.join("linkerd2-proxy-version.txt"), version).unwrap();
    let license = Path::new(env!("CARGO_MANIFEST_DIR")).join("../LICENSE");
    std::fs::copy(license, lib.join("LICENSE")).unwrap();
    ok(Command::new("setcap")
        .arg("cap_net_raw,cap_net_admin+eip")
        .arg(lib.join("linkerd2-proxy-init")));
    ctx
}

#[test]
fn the_dockerfiles_final_stage_has_linkerds_layout() {
    let root = run(Command::new("id").arg("-u"));
    let missing = [
        "podman", "setcap", "getcap", "ldd", "tar", "curl", "chroot", "ip",
    ]
    .into_iter()
    .find(|t| !has_tool(t));
    if String::from_utf8_lossy(&root.stdout).trim() != "0" || missing.is_some() {
        eprintln!(
            "SKIPPED the_dockerfiles_final_stage_has_linkerds_layout: needs root and {}",
            missing.unwrap_or("root")
        );
        return;
    }
    let id = std::process::id();
    let dir = std::env::temp_dir().join(format!("l5d-image-test-{id}"));
    let (base, image) = (
        format!("localhost/l5d-test-runtime:{id}"),
        format!("localhost/l5d-test-proxy:{id}"),
    );
    let _cleanup = Cleanup {
        dir: dir.clone(),
        images: vec![image.clone(), base.clone()],
    };
    std::fs::create_dir_all(dir.join("empty")).unwrap();
    let ctx = build_context(&dir);
    runtime_base(&dir, &base, &ctx.join("out/usr/lib/linkerd"));
    let dockerfile = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Dockerfile");
    ok(Command::new("podman")
        .args(["build", "--quiet", "-t", &image, "-f"])
        .arg(&dockerfile)
        .arg(format!("--build-context=build={}", ctx.display()))
        .arg(format!("--build-context=runtime=container-image://{base}"))
        .arg(dir.join("empty")));

    // The image's configuration.
    let config = ok(Command::new("podman").args([
        "image",
        "inspect",
        &image,
        "--format",
        "{{.Config.User}}|{{json .Config.Entrypoint}}|{{json .Config.Cmd}}|{{json .Config.Env}}",
    ]));
    let parts: Vec<&str> = config.trim().split('|').collect();
    assert_eq!(parts[0], "2102", "the chart's proxy uid: {config}");
    assert_eq!(
        parts[1], "[\"/usr/lib/linkerd/linkerd2-proxy-identity\"]",
        "{config}"
    );
    assert!(parts[2] == "null" || parts[2] == "[]", "no CMD: {config}");
    assert!(
        parts[3].contains("LINKERD2_PROXY_LOG=warn,linkerd=info"),
        "{config}"
    );
    assert!(
        parts[3].contains("LINKERD2_PROXY_LOG_FORMAT=plain"),
        "{config}"
    );

    // The files, at Linkerd's paths.
    let mnt = PathBuf::from(ok(Command::new("podman").args(["image", "mount", &image])).trim());
    for (file, exec) in LAYOUT {
        let path = mnt.join(file);
        let meta = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(meta.is_file(), "{file}");
        if exec {
            assert!(
                meta.permissions().mode() & 0o111 != 0,
                "{file} is executable"
            );
        }
    }
    assert_eq!(
        std::fs::read_link(mnt.join("usr/lib/linkerd/linkerd2-proxy-identity")).unwrap(),
        Path::new("linkerd2-proxy"),
        "the entrypoint is the proxy"
    );
    for tool in [
        "iptables-nft",
        "ip6tables-nft-save",
        "iptables-legacy",
        "ip6tables-legacy-save",
    ] {
        assert!(mnt.join("usr/sbin").join(tool).exists(), "{tool}");
    }
    for file in [
        "usr/lib/linkerd/linkerd2-proxy-init",
        "usr/sbin/xtables-nft-multi",
        "usr/sbin/xtables-legacy-multi",
    ] {
        let caps = ok(Command::new("getcap").arg(mnt.join(file)));
        assert!(
            caps.contains("cap_net_admin,cap_net_raw=eip"),
            "file capabilities of {file}: {caps}"
        );
    }
    for absent in [
        "bin/sh",
        "usr/bin/sh",
        "usr/bin/bash",
        "usr/bin/apt-get",
        "usr/bin/dpkg",
    ] {
        assert!(
            std::fs::symlink_metadata(mnt.join(absent)).is_err(),
            "no {absent} in the image"
        );
    }

    // The image's files at work, in a chroot (this machine cannot start containers):
    // proxy-init as the injector runs it, as uid 65534, in a namespace of its own; the
    // iptables binaries' file capabilities give it NET_ADMIN.
    let ns = format!("l5d-img-{id}");
    ok(Command::new("ip").args(["netns", "add", &ns]));
    let _ns = DeleteNetns(ns.clone());
    let init = run(Command::new("ip")
        .args(["netns", "exec", &ns, "chroot", "--userspec=65534:65534"])
        .arg(&mnt)
        .arg("/usr/lib/linkerd/linkerd2-proxy-init")
        .args(INJECTED_PROXY_INIT_ARGS)
        .env_clear()
        .env("PATH", IMAGE_PATH));
    assert!(init.status.success(), "proxy-init from the image: {init:?}");
    let rules =
        ok(Command::new("ip").args(["netns", "exec", &ns, "iptables-nft-save", "-t", "nat"]));
    assert!(
        rules.contains("-A PROXY_INIT_OUTPUT -m owner --uid-owner 2102"),
        "{rules}"
    );
    // The proxy by the entrypoint, as uid 2102, no arguments: it becomes ready.
    let admin = free_addr();
    let mut proxy = Command::new("chroot");
    proxy
        .arg("--userspec=2102:2102")
        .arg(&mnt)
        .arg("/usr/lib/linkerd/linkerd2-proxy-identity")
        .env_clear()
        .env("PATH", IMAGE_PATH)
        .env("LINKERD2_PROXY_ADMIN_LISTEN_ADDR", admin.to_string())
        .env("LINKERD2_PROXY_INBOUND_LISTEN_ADDR", "127.0.0.1:0")
        .env("LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR", "127.0.0.1:0")
        .env("LINKERD2_PROXY_CONTROL_LISTEN_ADDR", "127.0.0.1:0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let proxy = KillOnDrop(proxy.spawn().unwrap());
    wait_ready(admin);
    drop(proxy);

    // The proxy inside, as the kubelet starts it (the entrypoint, no arguments), on the
    // host's network with its admin server on a free port.
    let name = format!("l5d-test-proxy-{id}");
    let admin = free_addr();
    let admin_env = format!("LINKERD2_PROXY_ADMIN_LISTEN_ADDR={admin}");
    let started = run(Command::new("podman").args([
        "run",
        "-d",
        "--rm",
        "--name",
        &name,
        "--network=host",
        "--read-only",
        "-e",
        &admin_env,
        "-e",
        "LINKERD2_PROXY_INBOUND_LISTEN_ADDR=127.0.0.1:0",
        "-e",
        "LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR=127.0.0.1:0",
        "-e",
        "LINKERD2_PROXY_CONTROL_LISTEN_ADDR=127.0.0.1:0",
        &image,
    ]));
    if !started.status.success() {
        eprintln!(
            "SKIPPED the container run: containers cannot start here: {}",
            String::from_utf8_lossy(&started.stderr).trim()
        );
        return;
    }
    let _stop = StopContainer(name.clone());
    wait_ready(admin);
}

/// The image's `PATH`.
const IMAGE_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// Deletes a network namespace on drop.
struct DeleteNetns(String);

impl Drop for DeleteNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .output();
    }
}

/// Kills a child process on drop.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Stops the container on drop.
struct StopContainer(String);

impl Drop for StopContainer {
    fn drop(&mut self) {
        let _ = Command::new("podman").args(["rm", "-f", &self.0]).output();
    }
}

/// Waits until the proxy's `/ready` at `admin` answers `ready`.
fn wait_ready(admin: std::net::SocketAddr) {
    linkerd_tests::eventually_blocking(Duration::from_secs(20), || {
        let out =
            run(Command::new("curl").args(["-s", "-m", "2", &format!("http://{admin}/ready")]));
        let body = String::from_utf8_lossy(&out.stdout).into_owned();
        holds(body == "ready\n", body)
    });
}

/// The entrypoint name the injector relies on (`/usr/lib/linkerd/linkerd2-proxy-identity`)
/// is the proxy itself: started by that name, with no arguments, it becomes ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_entrypoint_name_starts_the_proxy() {
    let dir = std::env::temp_dir().join(format!("l5d-entrypoint-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let entry = dir.join("linkerd2-proxy-identity");
    let _ = std::fs::remove_file(&entry);
    std::os::unix::fs::symlink(linkerd_tests::proxy_bin(), &entry).unwrap();
    let admin = free_addr();
    let mut proxy = tokio::process::Command::new(&entry)
        .env("LINKERD2_PROXY_ADMIN_LISTEN_ADDR", admin.to_string())
        .env("LINKERD2_PROXY_INBOUND_LISTEN_ADDR", "127.0.0.1:0")
        .env("LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR", "127.0.0.1:0")
        .env("LINKERD2_PROXY_CONTROL_LISTEN_ADDR", "127.0.0.1:0")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::task::spawn_blocking(move || wait_ready(admin))
        .await
        .unwrap();
    let _ = proxy.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
}
