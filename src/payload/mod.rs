//! The closed set of payload kinds: [`PortType`], one variant per kind of envelope a pipeline
//! carries, and the [`Payload`] trait every kind implements.
//!
//! Every component declares the port it consumes and produces (`ComponentKind::input_port`,
//! `output_port`); `check` compares them edge by edge. At run time the topology makes one
//! channel per consumer, erased to [`AnyTx`]/[`AnyRx`], and hands it to components that were
//! built erased too (`BuiltSource`, `BuiltStage`, `BuiltSink`); [`PortType::visit`] turns the
//! port back into the payload type, so the runners, ordering keys, dead letters, archive and
//! tap are written once, generically, and nothing above this module matches on a payload.
//!
//! **Adding a payload kind** is one line of `payloads!` below (its variant, type and
//! description) and the type's `RawBytes` (what a dead letter keeps), `Keyed` (its ordering
//! keys) and `Archivable` (what the raw archive keeps) — all three next to the type.
//! Appointments (HL7 SIU, [`crate::appointment`]) came in that way; referrals will.

use std::any::Any;
use std::sync::Arc;

use tokio::sync::mpsc;

pub mod capabilities;

pub use capabilities::{Archivable, ArchiveBody, Keyed, OrderKey, RawBytes};

use crate::envelope::Envelope;

/// What every envelope payload can do: be dead-lettered with its bytes, be ordered by key,
/// be archived; [`Payload::PORT`] names its variant of [`PortType`].
pub trait Payload: RawBytes + Keyed + Archivable + Send + Sync + 'static {
    const PORT: PortType;
}

/// Code generic over the payload type, run for the type a [`PortType`] names
/// ([`PortType::visit`]): how the topology wires a channel without a `match` of its own.
pub trait PayloadVisitor {
    type Out;
    fn visit<T: Payload>(self) -> Self::Out;
}

macro_rules! payloads {
    ($( $(#[$doc:meta])* $variant:ident($ty:ty) = $desc:literal, )*) => {
        /// The type of envelopes flowing on an edge, checked at validation time.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum PortType {
            $( $(#[$doc])* $variant, )*
        }

        impl PortType {
            /// Every payload kind.
            pub const ALL: &'static [PortType] = &[$(PortType::$variant),*];

            /// What flows on the edge, for `check`'s messages.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( PortType::$variant => $desc, )*
                }
            }

            /// Runs `v` for the payload type of this port.
            pub fn visit<V: PayloadVisitor>(self, v: V) -> V::Out {
                match self {
                    $( PortType::$variant => v.visit::<$ty>(), )*
                }
            }
        }

        $( impl Payload for $ty { const PORT: PortType = PortType::$variant; } )*
    };
}

payloads! {
    /// `Envelope<Raw>`: bytes from a source.
    Raw(crate::envelope::Raw) = "raw bytes",
    /// `Envelope<LabFile>`: a parsed lab file (possibly with patient matches).
    LabFile(crate::lab_file::LabFile) = "parsed lab file",
    /// `Envelope<Appointment>`: one scheduling message (SIU), possibly with its patient match.
    Appointment(crate::appointment::Appointment) = "scheduling message",
    /// `Envelope<InboundDocument>`: a received document (fax) spooled on disk.
    Document(crate::document::InboundDocument) = "received document",
    /// `Envelope<FaxJob>`: one fax of OSCAR's outbound queue, claimed.
    FaxJob(crate::jobs::FaxJob) = "outbound fax job",
    /// `Envelope<SmsJob>`: one text message of our outbox, claimed.
    SmsJob(crate::jobs::SmsJob) = "text message job",
}

/// The sending half of a consumer's channel, its payload type erased.
#[derive(Clone)]
pub struct AnyTx {
    port: PortType,
    tx: Arc<dyn Any + Send + Sync>,
}

/// The receiving half of a consumer's channel, its payload type erased.
pub struct AnyRx {
    port: PortType,
    rx: Box<dyn Any + Send>,
}

/// How many envelopes wait in a channel (a gauge), without keeping the channel open.
pub type QueueDepth = Box<dyn Fn() -> usize + Send + Sync>;

/// A bounded channel of `port`'s payload.
pub fn channel(port: PortType, capacity: usize) -> (AnyTx, AnyRx, QueueDepth) {
    struct Make(usize);
    impl PayloadVisitor for Make {
        type Out = (AnyTx, AnyRx, QueueDepth);
        fn visit<T: Payload>(self) -> Self::Out {
            let (tx, rx) = mpsc::channel::<Envelope<T>>(self.0);
            let weak = tx.downgrade();
            let depth: QueueDepth = Box::new(move || {
                weak.upgrade()
                    .map(|s| s.max_capacity() - s.capacity())
                    .unwrap_or(0)
            });
            (
                AnyTx {
                    port: T::PORT,
                    tx: Arc::new(tx),
                },
                AnyRx {
                    port: T::PORT,
                    rx: Box::new(rx),
                },
                depth,
            )
        }
    }
    port.visit(Make(capacity.max(1)))
}

impl AnyTx {
    pub fn port(&self) -> PortType {
        self.port
    }
    /// The typed sender; `None` when the channel carries another payload.
    pub fn typed<T: Payload>(&self) -> Option<mpsc::Sender<Envelope<T>>> {
        self.tx.downcast_ref::<mpsc::Sender<Envelope<T>>>().cloned()
    }
}

impl AnyRx {
    pub fn port(&self) -> PortType {
        self.port
    }
    /// The typed receiver; `None` when the channel carries another payload.
    pub fn typed<T: Payload>(self) -> Option<mpsc::Receiver<Envelope<T>>> {
        self.rx
            .downcast::<mpsc::Receiver<Envelope<T>>>()
            .ok()
            .map(|b| *b)
    }
}

/// A built component with its payload type erased: `ports` are what it consumes and/or
/// produces, `inner` the typed component, taken back with [`Erased::take`].
pub struct Erased {
    pub input: Option<PortType>,
    pub output: Option<PortType>,
    inner: Box<dyn Any + Send>,
}

impl Erased {
    pub fn new<C: Send + 'static>(
        input: Option<PortType>,
        output: Option<PortType>,
        component: C,
    ) -> Self {
        Erased {
            input,
            output,
            inner: Box::new(component),
        }
    }
    /// The component as `C`; `None` when it is another type (a wiring bug, reported).
    pub fn take<C: 'static>(self) -> Option<C> {
        self.inner.downcast::<C>().ok().map(|b| *b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_is_taken_back_only_as_its_own_payload() {
        for &port in PortType::ALL {
            let (tx, rx, depth) = channel(port, 2);
            assert_eq!((tx.port(), rx.port()), (port, port));
            assert_eq!(depth(), 0);
            let raw_ok = tx.typed::<crate::envelope::Raw>().is_some();
            assert_eq!(raw_ok, port == PortType::Raw, "{port:?}");
            let lab_ok = rx.typed::<crate::lab_file::LabFile>().is_some();
            assert_eq!(lab_ok, port == PortType::LabFile, "{port:?}");
        }
    }

    #[test]
    fn every_port_has_a_distinct_description() {
        let mut seen = std::collections::HashSet::new();
        for p in PortType::ALL {
            assert!(seen.insert(p.as_str()), "{p:?}");
        }
    }
}
