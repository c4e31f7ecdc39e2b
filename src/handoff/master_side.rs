//! The master's side of the handoff: one channel per generation, created with the
//! generation's first child; a target sent to a child before its SIGHUP; what is left on the
//! channel of a generation that is over passed on to the current one.
//!
//! The master never reads a connection's bytes: it only moves descriptors, once per old child
//! and reload, and once per connection left behind by a generation whose children have all
//! exited (or queued on a listener it closes, see `process::master`).

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::wire::{pair, send_connection, send_parked, send_target, take_connection, ReceiveError};

/// A generation's channel: its children poll `receive`; older children get `send` as their
/// target when this generation takes over.
struct Channel {
    receive: OwnedFd,
    send: OwnedFd,
}

/// Every generation's channel, owned by the master.
#[derive(Default)]
pub struct Channels {
    by_generation: BTreeMap<u64, Channel>,
}

impl Channels {
    pub fn new() -> Channels {
        Channels::default()
    }

    /// The receive end of `generation`'s channel, for a child about to be forked; the channel
    /// is made with the generation's first child.
    pub fn receive_end(&mut self, generation: u64) -> io::Result<BorrowedFd<'_>> {
        if let std::collections::btree_map::Entry::Vacant(entry) =
            self.by_generation.entry(generation)
        {
            let (receive, send) = pair()?;
            entry.insert(Channel { receive, send });
        }
        Ok(self.by_generation[&generation].receive.as_fd())
    }

    /// Tells the child behind `control` to hand its connections to `generation`'s channel.
    /// `Ok(false)`: that generation has no channel (none of its children was ever forked).
    pub fn send_target(&self, control: BorrowedFd<'_>, generation: u64) -> io::Result<bool> {
        match self.by_generation.get(&generation) {
            Some(channel) => send_target(control, channel.send.as_fd()).map(|()| true),
            None => Ok(false),
        }
    }

    /// Queues a connection (with no bytes read yet) for `generation`'s children. False when it
    /// could not be queued (no channel, or a full one); the caller closes it then.
    pub fn pass_new_connection(&self, generation: u64, connection: BorrowedFd<'_>) -> bool {
        self.by_generation.get(&generation).is_some_and(|channel| {
            send_connection(channel.send.as_fd(), connection, &[], true).is_ok()
        })
    }

    /// Closes the channels of the generations `in_use` says are over, passing whatever is still
    /// queued on them to `current`'s channel, so none is lost to a race between the last
    /// child's exit and a late handoff.
    pub fn close_finished(&mut self, in_use: impl Fn(u64) -> bool, current: u64) {
        let finished: Vec<u64> = self
            .by_generation
            .keys()
            .copied()
            .filter(|generation| !in_use(*generation))
            .collect();
        for generation in finished {
            let Some(channel) = self.by_generation.remove(&generation) else {
                continue;
            };
            let target = self.by_generation.get(&current);
            loop {
                let received = match take_connection(channel.receive.as_fd()) {
                    Ok(Some(received)) => received,
                    Ok(None) | Err(ReceiveError::Recvmsg(_)) => break,
                    Err(error) => {
                        // One bad message costs its connection, not the ones queued behind it.
                        log::warn!(
                            "lost a connection left on generation {generation}'s handoff \
                             channel: {error}"
                        );
                        continue;
                    }
                };
                // Passed on as it came: its bytes, its header deadline and its trust.
                let forwarded = target.is_some_and(|target| {
                    send_parked(
                        target.send.as_fd(),
                        received.fd.as_fd(),
                        &received.carried,
                        &received.with,
                    )
                    .is_ok()
                });
                if !forwarded {
                    log::warn!(
                        "closed a connection left on generation {generation}'s handoff channel"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn what_is_left_on_a_finished_generation_goes_to_the_current_one() {
        let mut channels = Channels::new();
        channels.receive_end(1).unwrap();
        channels.receive_end(2).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert!(channels.pass_new_connection(1, accepted.as_fd()));
        channels.close_finished(|generation| generation == 2, 2);
        let receive = channels.receive_end(2).unwrap();
        let received = take_connection(receive)
            .unwrap()
            .expect("forwarded to generation 2");
        assert!(received.first_request);
        assert!(
            !channels.pass_new_connection(1, accepted.as_fd()),
            "generation 1 is closed"
        );
    }
}
