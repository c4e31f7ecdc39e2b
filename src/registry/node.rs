//! Node leases: which of the nodes sharing a registry are alive (issue 15).
//!
//! Every child of a node renews the node's lease at each maintenance pass; a node whose lease
//! expired has stopped or lost the database, and the uploads and imports its processes held
//! are recovered by the others (their owner tokens name the node: `crate::store::owner_token`).
//! Expiry is on the database's clock, so the nodes' clocks need not agree.

use std::collections::HashSet;
use std::time::Duration;

use super::sql::{params, Connection, Dialect};
use super::{begin_immediate, begin_read, commit, Registry, RegistryError};

impl Registry {
    /// Extends `node`'s lease to `lease` from now, never shortening it.
    pub fn renew_node_lease(&self, node: &str, lease: Duration) -> Result<(), RegistryError> {
        let mut lease_connection = self.lease()?;
        let transaction = begin_immediate(&mut lease_connection)?;
        let sql = format!(
            "INSERT INTO node_leases (node, expires_order) VALUES (?1, {} + ?2) \
             ON CONFLICT (node) DO UPDATE SET expires_order = excluded.expires_order \
             WHERE excluded.expires_order > node_leases.expires_order",
            now_micros(&transaction)
        );
        let micros = i64::try_from(lease.as_micros()).unwrap_or(i64::MAX);
        transaction
            .execute(&sql, params![node, micros])
            .map_err(RegistryError::sql(format!(
                "renew the lease of node {node}"
            )))?;
        commit(transaction)
    }

    /// The nodes whose lease has not expired.
    pub fn live_nodes(&self) -> Result<HashSet<String>, RegistryError> {
        let mut lease = self.lease()?;
        let transaction = begin_read(&mut lease)?;
        let sql = format!(
            "SELECT node FROM node_leases WHERE expires_order > {}",
            now_micros(&transaction)
        );
        let nodes: Vec<String> = transaction
            .query_map(&sql, &[], |row| row.get(0))
            .map_err(RegistryError::sql("read the live nodes"))?;
        Ok(nodes.into_iter().collect())
    }
}

/// The database's clock, in microseconds since the epoch, as SQL.
fn now_micros(connection: &Connection) -> &'static str {
    match connection.dialect() {
        Dialect::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)",
        Dialect::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT)",
    }
}
