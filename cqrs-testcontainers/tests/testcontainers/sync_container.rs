//! The sync-service as the container of our image (`TestScope::start_sync_service`): a
//! `sync.toml` with a declarative projection of this test's table, rows in, documents out.

use std::time::Duration;

use bson::{Document, doc};

use crate::support::{self, until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_service_container_projects_this_scopes_rows() {
    let stack = support::stack().await;
    let scope = stack.scope("container").await.unwrap();
    let s = scope.schema();
    let pg = support::pg(&stack).await;
    // the table and a first row before the service subscribes: Debezium makes the topic
    pg.batch_execute(&format!(
        "CREATE SCHEMA {s};
         CREATE TABLE {s}.orders (id bigint PRIMARY KEY, status text NOT NULL, note text);
         INSERT INTO {s}.orders VALUES (1, 'created', 'internal');"
    ))
    .await
    .unwrap();
    let sync = scope
        .start_sync_service(
            r#"
            [kafka]
            bootstrap_servers = "set by the scope"
            group_id = "set by the scope"
            topic_regex = "cqrs\\.${CQRS_SCHEMA}\\..*"
            format = "avro"

            [mongodb]
            uri = "set by the scope"
            database = "set by the scope"

            [[projection]]
            table = "${CQRS_SCHEMA}.orders"
            collection = "orders"
            exclude = ["note"]
            "#,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    support::report(&format!("sync-service container: {}", sync.image()));
    pg.execute(
        &format!("UPDATE {s}.orders SET status = 'paid' WHERE id = 1"),
        &[],
    )
    .await
    .unwrap();
    pg.execute(
        &format!("INSERT INTO {s}.orders VALUES (2, 'created', 'x')"),
        &[],
    )
    .await
    .unwrap();

    let orders = scope
        .mongo_client()
        .await
        .unwrap()
        .client()
        .database(scope.database())
        .collection::<Document>("orders");
    until(
        "both orders in MongoDB, as the container wrote them",
        Duration::from_secs(90),
        || {
            let orders = orders.clone();
            let log = sync.log_tail(20);
            async move {
                let one = orders
                    .find_one(doc! { "_id": 1_i64 })
                    .await
                    .map_err(|e| e.to_string())?;
                let two = orders
                    .find_one(doc! { "_id": 2_i64 })
                    .await
                    .map_err(|e| e.to_string())?;
                match (one, two) {
                    (Some(one), Some(_)) if one.get_str("status") == Ok("paid") => {
                        if one.contains_key("note") {
                            return Err(format!("`note` is excluded: {one}"));
                        }
                        Ok(())
                    }
                    other => Err(format!("{other:?}\n{}", log)),
                }
            }
        },
    )
    .await;
    let metrics = reqwest::get(sync.metrics_url())
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("sync_"),
        "the container serves its metrics"
    );
    sync.remove().await;
}
