//! The in-process bus: one relay, no Redis. Publishing is delivering.

use std::sync::Arc;

use bytestring::ByteString;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use super::{Bus, BusDown, Presence};
use crate::hub::{Hub, Identity};

pub struct LocalBus {
    hub: Arc<Hub>,
}

impl LocalBus {
    pub fn new(hub: Arc<Hub>) -> Self {
        Self { hub }
    }
}

impl Bus for LocalBus {
    fn publish<'a>(
        &'a self,
        room: &'a str,
        envelope: ByteString,
    ) -> BoxFuture<'a, Result<(), BusDown>> {
        self.hub.deliver(room, &envelope);
        futures_util::future::ready(Ok(())).boxed()
    }

    fn subscribe<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<(), BusDown>> {
        futures_util::future::ready(Ok(())).boxed()
    }

    fn unsubscribe<'a>(&'a self, _: &'a str) -> BoxFuture<'a, ()> {
        futures_util::future::ready(()).boxed()
    }

    fn enter<'a>(
        &'a self,
        _: &'a str,
        _: &'a Identity,
    ) -> BoxFuture<'a, Result<Presence, BusDown>> {
        futures_util::future::ready(Ok(Presence {
            members: None,
            present_elsewhere: false,
        }))
        .boxed()
    }

    fn exit<'a>(&'a self, _: &'a str, _: &'a Identity) -> BoxFuture<'a, bool> {
        futures_util::future::ready(false).boxed()
    }

    fn is_up(&self) -> bool {
        true
    }
}
