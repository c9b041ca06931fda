//! Real greet instances on 127.0.0.1 (the examples' greet server), started
//! and stopped in bulk.

use super::greet::GreetServer;

/// Starts `n` greet instances named `greet-0`, `greet-1`, ...
pub async fn start_instances(n: usize) -> Vec<GreetServer> {
    let mut instances = Vec::with_capacity(n);
    for i in 0..n {
        instances.push(
            GreetServer::start(&format!("greet-{i}"))
                .await
                .expect("start a greet instance"),
        );
    }
    instances
}

/// The instances' base URLs (`http://127.0.0.1:port`).
pub fn urls(instances: &[GreetServer]) -> Vec<String> {
    instances.iter().map(GreetServer::url).collect()
}

/// Stops every instance.
pub async fn stop_all(instances: Vec<GreetServer>) {
    for instance in instances {
        instance.stop().await;
    }
}
