//! Where the agent keeps things on the node. The pod workers and the kubelet server agree
//! through these paths only (the server reads logs and reaches the shim socket directly).

use std::path::{Path, PathBuf};

/// The node's directories, under `--data-dir` and the log root.
#[derive(Clone, Debug)]
pub struct NodePaths {
    /// `<data-dir>/agent`
    pub root: PathBuf,
    /// Pod log root (upstream `/var/log/pods`).
    pub log_root: PathBuf,
}

impl NodePaths {
    pub fn new(data_dir: &Path, log_root: &Path) -> NodePaths {
        NodePaths { root: data_dir.join("agent"), log_root: log_root.to_path_buf() }
    }

    /// The image store (`runtime::image::Store` root).
    pub fn images(&self) -> PathBuf {
        self.root.join("images")
    }

    /// libcontainer's state root (container state dirs).
    pub fn container_state(&self) -> PathBuf {
        self.root.join("containers")
    }

    /// One pod's directory: shim state, bundles, rootfs mounts, /etc/hosts, resolv.conf.
    pub fn pod_dir(&self, pod_uid: &str) -> PathBuf {
        self.root.join("pods").join(pod_uid)
    }

    /// The pod shim's control socket.
    pub fn shim_socket(&self, pod_uid: &str) -> PathBuf {
        self.pod_dir(pod_uid).join("shim.sock")
    }

    /// `<log_root>/<namespace>_<name>_<uid>/<container>/<restart>.log`, as the kubelet (CRI).
    pub fn container_log(&self, namespace: &str, name: &str, uid: &str, container: &str, restart: u32) -> PathBuf {
        self.pod_log_dir(namespace, name, uid).join(container).join(format!("{restart}.log"))
    }

    pub fn pod_log_dir(&self, namespace: &str, name: &str, uid: &str) -> PathBuf {
        self.log_root.join(format!("{namespace}_{name}_{uid}"))
    }

    /// The CNI result cache and IPAM state.
    pub fn network_state(&self) -> PathBuf {
        self.root.join("network")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_log_layout() {
        let p = NodePaths::new(Path::new("/d"), Path::new("/var/log/pods"));
        assert_eq!(
            p.container_log("default", "web", "u1", "nginx", 2),
            PathBuf::from("/var/log/pods/default_web_u1/nginx/2.log")
        );
        assert_eq!(p.shim_socket("u1"), PathBuf::from("/d/agent/pods/u1/shim.sock"));
    }
}
