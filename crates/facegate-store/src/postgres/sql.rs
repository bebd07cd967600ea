//! The connection type and BIGINT conversions every PostgreSQL file shares.

use postgres::NoTls;
use r2d2::PooledConnection;
use r2d2_postgres::PostgresConnectionManager;

pub(crate) type Manager = PostgresConnectionManager<NoTls>;
pub(crate) type Conn = PooledConnection<Manager>;

/// A count or position from PostgreSQL's BIGINT.
pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A count or position for PostgreSQL's BIGINT.
pub(crate) fn to_i64(v: impl TryInto<i64>) -> i64 {
    v.try_into().unwrap_or(i64::MAX)
}
