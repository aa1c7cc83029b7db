package files

import (
	"context"
	"os"
	"testing"
	"time"
)

// RunInbox makes the inbox folder when there is none, so that whoever
// drops the first file finds where to put it.
func TestRunInboxMakesTheFolder(t *testing.T) {
	f := newFixture(t, Options{}, "m1")
	if _, err := os.Stat(f.svc.opt.InboxDir); !os.IsNotExist(err) {
		t.Fatalf("inbox %s before RunInbox: %v, want none", f.svc.opt.InboxDir, err)
	}
	ctx, cancel := context.WithCancel(f.ctx)
	done := make(chan struct{})
	go func() { f.svc.RunInbox(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if fi, err := os.Stat(f.svc.opt.InboxDir); err == nil && fi.IsDir() {
			return
		} else if time.Now().After(deadline) {
			t.Fatalf("inbox %s after RunInbox started: %v", f.svc.opt.InboxDir, err)
		}
	}
}
