package files

import (
	"context"

	"github.com/puntos-loyalty/puntos/core"
)

// StartValidation validates a batch just received, in the background, as
// an upload through the API does; nothing is posted.
func (s *Service) StartValidation(b *core.Batch) { s.validateThenMaybePost(b, false, "") }

// StartPost starts posting a validated batch in the background on behalf
// of actor, or resumes an interrupted run; a batch already being posted by
// this process, or already posted, is left as it is. Errors: conflict (not
// validated, or waiting for a second person's approval).
func (s *Service) StartPost(b *core.Batch, actor string) error {
	switch {
	case b.Status == core.BatchPosted:
		return nil
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
