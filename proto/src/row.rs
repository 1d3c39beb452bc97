//! A `list` row borrowed from where its parts are kept, for an answer encoded as it is
//! built: the agent writes a thousand rows without a copy of each name, status and start
//! error, and the bytes are those of `Response::List` of the same `InstanceInfo`s.

use serde::Serialize;

use crate::response::{Health, InstanceInfo, State};
use crate::signal::Exit;
use crate::target::InstanceId;

/// `InstanceInfo`, field for field, with its strings borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename = "InstanceInfo")]
pub struct Row<'a> {
    pub id: RowId<'a>,
    pub pid: Option<u32>,
    pub state: State,
    pub uptime_secs: Option<u64>,
    pub restarts: u32,
    pub last_exit: Option<Exit>,
    pub health: Option<Health>,
    pub status: Option<&'a str>,
    pub cpu_tenths: Option<u32>,
    pub memory_bytes: Option<u64>,
    pub start_error: Option<&'a str>,
    pub recycles: u32,
    pub messages: u64,
    pub autoscale: Option<bool>,
}

/// `InstanceId` with its name borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename = "InstanceId")]
pub struct RowId<'a> {
    pub name: &'a str,
    pub index: u32,
}

impl InstanceInfo {
    /// This row, borrowed.
    pub fn row(&self) -> Row<'_> {
        Row {
            id: RowId { name: &self.id.name, index: self.id.index },
            pid: self.pid,
            state: self.state,
            uptime_secs: self.uptime_secs,
            restarts: self.restarts,
            last_exit: self.last_exit,
            health: self.health,
            status: self.status.as_deref(),
            cpu_tenths: self.cpu_tenths,
            memory_bytes: self.memory_bytes,
            start_error: self.start_error.as_deref(),
            recycles: self.recycles,
            messages: self.messages,
            autoscale: self.autoscale,
        }
    }
}

impl Row<'_> {
    /// This row, owned.
    pub fn to_info(&self) -> InstanceInfo {
        InstanceInfo {
            id: InstanceId::new(self.id.name, self.id.index),
            pid: self.pid,
            state: self.state,
            uptime_secs: self.uptime_secs,
            restarts: self.restarts,
            last_exit: self.last_exit,
            health: self.health,
            status: self.status.map(str::to_owned),
            cpu_tenths: self.cpu_tenths,
            memory_bytes: self.memory_bytes,
            start_error: self.start_error.map(str::to_owned),
            recycles: self.recycles,
            messages: self.messages,
            autoscale: self.autoscale,
        }
    }
}
