//! ImageLocality: prefers nodes that already have the pod's images, weighted by image size and
//! by how widely the image is spread (so one node with a popular image does not attract every
//! pod), between upstream's 23 MB and 1000 MB-per-container thresholds.

use super::MAX_NODE_SCORE;
use crate::cache::{Cache, NodeInfo};
use crate::pod_info::PodInfo;

const MB: i64 = 1024 * 1024;
const MIN_THRESHOLD: i64 = 23 * MB;
const MAX_CONTAINER_THRESHOLD: i64 = 1000 * MB;

pub fn score(pod: &PodInfo, node: &NodeInfo, cache: &Cache, total_nodes: usize) -> i64 {
    if node.images.is_empty() || total_nodes == 0 {
        return 0;
    }
    let mut sum: i64 = 0;
    for image in &pod.images {
        if let Some(size) = node.images.get(image) {
            let spread = cache.image_node_count(image) as f64 / total_nodes as f64;
            sum += (*size as f64 * spread) as i64;
        }
    }
    let max_threshold = MAX_CONTAINER_THRESHOLD * pod.images.len() as i64;
    let sum = sum.clamp(MIN_THRESHOLD, max_threshold);
    MAX_NODE_SCORE * (sum - MIN_THRESHOLD) / (max_threshold - MIN_THRESHOLD)
}
