package natsbus

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// embeddedStartTimeout bounds the wait for an embedded server to accept
// connections.
const embeddedStartTimeout = 10 * time.Second

// StartEmbedded starts a NATS server with JetStream inside this process,
// listening on 127.0.0.1:port (0 or -1 picks a free port), and keeps its
// store under dataDir. It returns the server and the URL clients connect to;
// stop it with Shutdown and WaitForShutdown.
//
// With syncAlways the store is flushed to disk on every write, so a publish
// the server acknowledged survives a crash of the machine. WARNING: without
// it JetStream syncs every two minutes and a crash can lose messages that
// were already acknowledged.
func StartEmbedded(dataDir string, port int, syncAlways bool) (*server.Server, string, error) {
	if dataDir == "" {
		return nil, "", errors.New("start embedded nats: no data directory")
	}
	if port == 0 {
		// For the server, port 0 means its default 4222; we mean any port.
		port = server.RANDOM_PORT
	} else if port != server.RANDOM_PORT {
		// The server would only say it is not ready after the timeout: find
		// out first whether the port is free (and a port at all), and say so.
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			return nil, "", fmt.Errorf("start embedded nats: %w", err)
		}
		ln.Close()
	}

	opts := &server.Options{
		ServerName: "puntos-embedded",
		Host:       "127.0.0.1",
		Port:       port,
		JetStream:  true,
		StoreDir:   dataDir,
		SyncAlways: syncAlways,
		NoSigs:     true,
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, "", fmt.Errorf("start embedded nats: %w", err)
	}

	s.Start()
	if !s.ReadyForConnections(embeddedStartTimeout) {
		s.Shutdown()
		s.WaitForShutdown()
		return nil, "", fmt.Errorf("start embedded nats: not ready after %s",
			embeddedStartTimeout)
	}
	if !s.JetStreamEnabled() {
		s.Shutdown()
		s.WaitForShutdown()
		return nil, "", errors.New("start embedded nats: jetstream did not start")
	}
	return s, s.ClientURL(), nil
}
