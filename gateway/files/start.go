package files

import (
	"context"
	"time"

	"github.com/puntos-loyalty/puntos/core"
)

// StartValidation validates a batch just received, in the background, as
// an upload through the API does; nothing is posted.
func (s *Service) StartValidation(b *core.Batch) { s.validateThenMaybePost(b, false, "") }

// StartPost starts posting a validated batch in the background on behalf
// of actor, or resumes an interrupted run; a batch already being posted by
// this process, or already posted, is left as it is. A batch still to be
// validated is validated first (again from the start, when its validation
// was cut short) and posted when it turns out valid and in no need of an
// approval. Errors: conflict (failed, waiting for a second person's
// approval, or being validated by another process).
func (s *Service) StartPost(b *core.Batch, actor string) error {
	switch {
	case b.Status == core.BatchPosted:
		return nil
	case unvalidated(b):
		return s.postOnceValidated(b, actor)
	case b.Status != core.BatchValidated && b.Status != core.BatchPosting:
		return core.Errorf(core.Conflict, "batch", "is %s; only a validated batch posts",
			b.Status)
	case b.NeedsApproval && b.ApprovedBy == "":
		return core.Errorf(core.Conflict, "batch", "moves %d points, above the approval "+
			"limit: another person must approve it first", b.Credit+b.Debit)
	}
	s.mu.Lock()
	busy := s.running["post:"+b.ID]
	s.mu.Unlock()
	if !busy {
		s.start("post", b, func(ctx context.Context) error {
			_, err := s.Post(ctx, b, actor)
			return err
		})
	}
	return nil
}

// postOnceValidated validates a batch that is still to be validated and
// then posts it, or notes the post for when this process's running
// validation of it ends. Errors: conflict (another process validates it).
func (s *Service) postOnceValidated(b *core.Batch, actor string) error {
	if !s.claimValidation(b.ID, true, actor) {
		return nil // posted when the validation running here ends
	}
	// Whether another process validates it now, to say so.
	ctx, cancel := context.WithTimeout(s.bg, 10*time.Second)
	lock, err := s.ledger.LockValidation(ctx, b.ID)
	cancel()
	if err != nil {
		s.endValidation(b.ID)
		if core.KindOf(err) == core.Conflict {
			return core.Errorf(core.Conflict, "batch", "is being validated by another "+
				"process; post it once it is validated")
		}
		return err
	}
	lock.Release()
	s.validateClaimedThenMaybePost(b, true, actor)
	return nil
}
