//! Why the server closes a connection: the WebSocket close code, its reason text, and whether a
//! client should come back.

/// A close the server sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    Draining,
    Flood,
    FrameTooLarge,
    Internal,
    Idle,
    SlowConsumer,
    Replaced,
    TokenExpired,
    Kicked,
    Unavailable,
}

impl CloseReason {
    pub const ALL: [CloseReason; 10] = [
        CloseReason::Draining,
        CloseReason::Flood,
        CloseReason::FrameTooLarge,
        CloseReason::Internal,
        CloseReason::Idle,
        CloseReason::SlowConsumer,
        CloseReason::Replaced,
        CloseReason::TokenExpired,
        CloseReason::Kicked,
        CloseReason::Unavailable,
    ];

    pub fn code(self) -> u16 {
        match self {
            CloseReason::Draining => 1001,
            CloseReason::Flood => 1008,
            CloseReason::FrameTooLarge => 1009,
            CloseReason::Internal => 1011,
            CloseReason::Unavailable => 1013,
            CloseReason::Idle => 4000,
            CloseReason::SlowConsumer => 4001,
            CloseReason::Replaced => 4002,
            CloseReason::TokenExpired => 4003,
            CloseReason::Kicked => 4004,
        }
    }

    /// The reason text, also the `reason` label of the closes metric.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Draining => "draining",
            CloseReason::Flood => "flood",
            CloseReason::FrameTooLarge => "frame_too_large",
            CloseReason::Internal => "internal",
            CloseReason::Idle => "idle",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::Replaced => "replaced",
            CloseReason::TokenExpired => "token_expired",
            CloseReason::Kicked => "kicked",
            CloseReason::Unavailable => "try_again_later",
        }
    }

    pub fn from_code(code: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.code() == code)
    }

    /// Whether a client should reconnect on its own after this close. `replaced` (another tab
    /// took the seat) and `kicked` (the school removed the user) are final.
    pub fn reconnect(self) -> bool {
        !matches!(self, CloseReason::Replaced | CloseReason::Kicked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_round_trip() {
        for reason in CloseReason::ALL {
            assert_eq!(CloseReason::from_code(reason.code()), Some(reason));
        }
        assert!(!CloseReason::Replaced.reconnect());
        assert!(CloseReason::Draining.reconnect());
    }
}
