package testkit

import "go.uber.org/goleak"

// LibraryGoroutines are goleak options for goroutines that belong to libraries, not
// to Latchkey, and may outlive a clean shutdown:
//   - go-redis's background re-dial after a failed dial (tryDial) ends a second after
//     its pool closes;
//   - nats.go's jetstream async-publish watcher (resetPendingAcksOnReconnect, started
//     by PublishMsgAsync and by object store puts) can read the connection's status
//     channel after the close has cleared it, and then waits on a nil channel.
func LibraryGoroutines() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"),
		goleak.IgnoreTopFunction("github.com/nats-io/nats.go/jetstream.(*jetStream).resetPendingAcksOnReconnect"),
	}
}
