package app

import (
	"context"

	"github.com/puntos-loyalty/puntos/gateway/files"
	"github.com/puntos-loyalty/puntos/gateway/rest"
)

// mountFiles serves bulk point loads from files on api when this process
// runs core: posting applies the lines straight to the ledger in chunks
// (core is the ledger's only writer, and this is core). It resumes what a
// stopped process left unfinished and watches the inbox folder; both stop
// when the App closes, before the database pool does.
func (a *App) mountFiles(api *rest.Server) {
	if !a.roles.Core {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	svc := files.New(ctx, a.Ledger, a.log, files.Options{DataDir: a.cfg.DataDir,
		InboxDir: a.cfg.InboxDir, InboxPoll: a.cfg.InboxPoll,
		ApprovalPoints: int64(a.cfg.BulkApproval)})
	api.MountFiles(svc)
	a.files = svc
	if err := svc.Resume(ctx); err != nil {
		a.log.Error("Unfinished batches not resumed", "error", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		svc.RunInbox(ctx)
	}()
	prev := a.cancel
	a.cancel = func() {
		cancel()
		<-done
		svc.Wait()
		if prev != nil {
			prev()
		}
	}
}

// bulkFiles is the bulk-load service for the back office: nil until
// mountFiles has run, and in a process without core.
func (a *App) bulkFiles() *files.Service { return a.files }
