//! Node leases: which of the nodes sharing a registry are alive (issue 15).
//!
//! Every child of a node renews the node's lease at each maintenance pass; a node whose lease
//! expired has stopped or lost the database, and the uploads and imports its processes held
//! are recovered by the others (their owner tokens name the node: `crate::store::owner_token`).
//! Expiry is on the database's clock, so the nodes' clocks need not agree.

use std::collections::HashSet;
use std::time::Duration;

use super::sql::{params, Connection, Dialect};
use super::{begin_read, Registry, RegistryError};

impl Registry {
    /// Extends `node`'s lease, held by `instance` (the machine it runs on), to `lease` from now,
    /// never shortening it. False, changing nothing, when another instance holds a live lease
    /// under this name: two machines were given the same `node_name`.
    ///
    /// One statement, outside any write transaction: it must not wait behind a long write of
    /// another node, or the lease would run out while the node is alive.
    pub fn renew_node_lease(
        &self,
        node: &str,
        instance: &str,
        lease: Duration,
    ) -> Result<bool, RegistryError> {
        let connection = self.lease()?;
        let now = now_micros(&connection);
        let sql = format!(
            "INSERT INTO node_leases (node, instance, expires_order) VALUES (?1, ?2, {now} + ?3) \
             ON CONFLICT (node) DO UPDATE SET instance = excluded.instance, \
             expires_order = excluded.expires_order \
             WHERE (node_leases.instance = excluded.instance \
             AND excluded.expires_order > node_leases.expires_order) \
             OR node_leases.expires_order <= {now}"
        );
        let micros = i64::try_from(lease.as_micros()).unwrap_or(i64::MAX);
        let context = || format!("renew the lease of node {node}");
        let changed = connection
            .execute(&sql, params![node, instance, micros])
            .map_err(RegistryError::sql(context()))?;
        if changed > 0 {
            return Ok(true);
        }
        // Nothing changed: a longer lease of ours (a sibling renewed), or another's.
        let holder: Option<String> = connection
            .query_opt(
                "SELECT instance FROM node_leases WHERE node = ?1",
                params![node],
                |row| row.get(0),
            )
            .map_err(RegistryError::sql(context()))?;
        Ok(holder.as_deref() == Some(instance))
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
