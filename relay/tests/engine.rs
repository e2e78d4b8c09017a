//! The storage engine is chosen by `storage.engine` (issue 23 item 4), and a
//! data directory keeps the engine it was made with: starting the other one
//! would serve an empty store over the queued blobs.
#![allow(clippy::unwrap_used)]

use sotto_relay::{AuditError, Config, Engine, Server, StartError};

fn config(dir: &std::path::Path, engine: Engine) -> Config {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_owned(),
        ..Config::default()
    };
    config.storage.engine = engine;
    config
}

#[tokio::test]
async fn a_data_dir_refuses_the_engine_it_was_not_made_with() {
    let fjall = tempfile::tempdir().unwrap();
    let server = Server::start_fjall(config(fjall.path(), Engine::Fjall))
        .await
        .unwrap();
    server.shutdown().await;
    assert!(fjall.path().join("fjall").is_dir());
    assert!(!fjall.path().join("db").exists(), "no sled database made");
    match Server::start(config(fjall.path(), Engine::Sled)).await {
        Err(StartError::OtherEngine {
            found, configured, ..
        }) => assert_eq!((found, configured), ("fjall", "sled")),
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("sled started over a fjall data directory"),
    }
    assert!(!fjall.path().join("db").exists(), "nothing was created");
    // The audit says why it cannot read it, and creates nothing either.
    match sotto_relay::audit(fjall.path(), false) {
        Err(AuditError::FjallEngine { .. }) => {}
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("the audit read a fjall data directory as sled"),
    }
    assert!(!fjall.path().join("db").exists());
    // It starts again on its own engine.
    let server = Server::start_fjall(config(fjall.path(), Engine::Fjall))
        .await
        .unwrap();
    server.shutdown().await;

    let sled = tempfile::tempdir().unwrap();
    let server = Server::start(config(sled.path(), Engine::Sled))
        .await
        .unwrap();
    server.shutdown().await;
    match Server::start_fjall(config(sled.path(), Engine::Fjall)).await {
        Err(StartError::OtherEngine {
            found, configured, ..
        }) => assert_eq!((found, configured), ("sled", "fjall")),
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("fjall started over a sled data directory"),
    }
    assert!(!sled.path().join("fjall").exists());
}

#[test]
fn the_engine_is_read_from_the_config_file_and_sled_is_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.toml");
    std::fs::write(&path, "[storage]\nengine = \"fjall\"\n").unwrap();
    assert_eq!(
        Config::from_file(&path).unwrap().storage.engine,
        Engine::Fjall
    );
    std::fs::write(&path, "").unwrap();
    assert_eq!(
        Config::from_file(&path).unwrap().storage.engine,
        Engine::Sled
    );
    std::fs::write(&path, "[storage]\nengine = \"rocks\"\n").unwrap();
    assert!(Config::from_file(&path).is_err(), "an unknown engine");
}
