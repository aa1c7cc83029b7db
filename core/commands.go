package core

import "time"

// Command kinds, as they travel on the bus.
const (
	KindProgramUpsert = "program.upsert"
	KindEnroll        = "member.enroll"
	KindAccrue        = "points.accrue"
	KindCredit        = "points.credit"
	KindRedeem        = "points.redeem"
	KindAuthorize     = "points.authorize"
	KindCapture       = "points.capture"
	KindRelease       = "points.release"
	KindReverse       = "points.reverse"
	KindAdjust        = "points.adjust"
	KindTransfer      = "points.transfer"
	KindMerge         = "member.merge"
	KindSuspend       = "member.suspend"
	KindReactivate    = "member.reactivate"
	KindClose         = "member.close"
)

// Posting kinds.
const (
	PostAccrual     = "accrual"
	PostCredit      = "credit"
	PostRedemption  = "redemption"
	PostHold        = "hold"
	PostCapture     = "capture"
	PostRelease     = "release"
	PostReversal    = "reversal"
	PostAdjustment  = "adjustment"
	PostExpiry      = "expiry"
	PostMaturation  = "maturation"
	PostTransferOut = "transfer_out"
	PostTransferIn  = "transfer_in"
	PostForfeit     = "forfeit"
	PostMergeOut    = "merge_out"
	PostMergeIn     = "merge_in"
)

// Enroll is the payload of a member enrollment. The member's reference is
// the operator's own customer reference, unique within the program.
type Enroll struct {
	Channel    string     `json:"channel,omitempty"`
	EnrolledAt *time.Time `json:"enrolled_at,omitempty"`
	// Attributes are what rule conditions may read of the member.
	Attributes *MemberAttributes `json:"attributes,omitempty"`
}

// Accrue asks for points for a customer action paid in money.
type Accrue struct {
	EventType string `json:"event_type"`
	Amount    string `json:"amount"`
	Currency  string `json:"currency,omitempty"`
	Partner   string `json:"partner,omitempty"`
}

// Credit gives points directly (bonus, regularisation).
type Credit struct {
	Points    Points     `json:"points"`
	Reason    string     `json:"reason"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	// ExpiresOn gives the points a fixed last day (YYYY-MM-DD), usable to its
	// end in the program's time zone; at most one of it and ExpiresAt.
	ExpiresOn string `json:"expires_on,omitempty"`
}

// Redeem spends points.
type Redeem struct {
	Points Points `json:"points"`
	Reason string `json:"reason,omitempty"`
}

// Authorize reserves points for a later capture.
type Authorize struct {
	Points     Points `json:"points"`
	TTLSeconds int    `json:"ttl_seconds,omitempty"`
	Reason     string `json:"reason,omitempty"`
}

// Capture takes all or part of a hold, named by the authorization's
// transaction id (same source). Points 0 captures the whole hold.
type Capture struct {
	HoldTxnID string `json:"hold_txn_id"`
	Points    Points `json:"points,omitempty"`
}

// Release frees what is left of a hold.
type Release struct {
	HoldTxnID string `json:"hold_txn_id"`
}

// Reverse undoes one posting, named by its id or by the transaction id of
// the command that made it (same source).
type Reverse struct {
	PostingID     int64  `json:"posting_id,omitempty"`
	OriginalTxnID string `json:"original_txn_id,omitempty"`
	Reason        string `json:"reason"`
	// OnlyKind, when set, refuses to reverse a posting of any other kind
	// (a "cancel redemption" must not claw back an accrual).
	OnlyKind string `json:"only_kind,omitempty"`
}

// Adjust is a manual correction by a named person, positive or negative.
type Adjust struct {
	Points Points `json:"points"`
	Reason string `json:"reason"`
}

// Transfer moves points to another member of the same program. The points
// keep the expiry of the lots they came from.
type Transfer struct {
	To     string `json:"to"`
	Points Points `json:"points"`
	Reason string `json:"reason,omitempty"`
}

// Merge folds the command's member into the survivor: lots move with their
// dates, and the merged reference resolves to the survivor from then on.
type Merge struct {
	Into string `json:"into"`
}

// StatusChange suspends, reactivates or closes a member.
type StatusChange struct {
	Reason string `json:"reason"`
	// MaxForfeit, on a close, is the most points it may forfeit: the
	// ledger refuses a close that would take more (points earned since the
	// person looked). Nil sets no bound.
	MaxForfeit *Points `json:"max_forfeit,omitempty"`
}

// Balance is a member's three figures.
type Balance struct {
	Available Points `json:"available"`
	Pending   Points `json:"pending"`
	Held      Points `json:"held"`
}

// Member is a member of a program.
type Member struct {
	ID          string    `json:"id"`
	Program     string    `json:"program"`
	CustomerRef string    `json:"customer_ref"`
	Status      string    `json:"status"`
	Channel     string    `json:"channel,omitempty"`
	EnrolledAt  time.Time `json:"enrolled_at"`
	MergedInto  string    `json:"merged_into,omitempty"`
	Balance     Balance   `json:"balance"`
}

// Lot is what one credit left: points with their own dates.
type Lot struct {
	ID            int64      `json:"id"`
	EarnedAt      time.Time  `json:"earned_at"`
	SpendableFrom time.Time  `json:"spendable_from"`
	ExpiresAt     *time.Time `json:"expires_at,omitempty"`
	Pending       bool       `json:"pending"`
	Original      Points     `json:"original"`
	Remaining     Points     `json:"remaining"`
	Held          Points     `json:"held"`
}

// Posting is one append-only entry of a member's statement.
type Posting struct {
	ID           int64  `json:"id"`
	Kind         string `json:"kind"`
	Points       Points `json:"points"`
	HeldDelta    Points `json:"held_delta,omitempty"`
	PendingDelta Points `json:"pending_delta,omitempty"`
	Source       string `json:"source"`
	TxnID        string `json:"txn_id,omitempty"`
	Reason       string `json:"reason,omitempty"`
	RuleVersion  string `json:"rule_version,omitempty"`
	Actor        string `json:"actor,omitempty"`
	Partner      string `json:"partner,omitempty"`
	ReversesID   int64  `json:"reverses_id,omitempty"`
	// WrittenOff are the points this reversal or refund could not take back
	// (the member had spent them), as recorded lot by lot; Recovered are
	// points this undo put back on a reversed credit's lot to settle such a
	// write-off instead of giving them to the member (Outcome's fields).
	WrittenOff Points    `json:"written_off,omitempty"`
	Recovered  Points    `json:"written_off_recovered,omitempty"`
	OccurredAt time.Time `json:"occurred_at"`
	RecordedAt time.Time `json:"recorded_at"`
	Lots       []LotMove `json:"lots,omitempty"`
}

// LotMove is how much a posting took from (negative) or gave to a lot.
type LotMove struct {
	LotID  int64  `json:"lot_id"`
	Points Points `json:"points"`
	Held   Points `json:"held,omitempty"`
}

// Outcome is the result data of a command that changed the ledger.
type Outcome struct {
	Member     string  `json:"member"`
	PostingIDs []int64 `json:"posting_ids,omitempty"`
	Points     Points  `json:"points"`
	Balance    Balance `json:"balance"`
	HoldID     string  `json:"hold_id,omitempty"`
	Written    Points  `json:"written_off,omitempty"`
	// Recovered are points that came back to lots of a reversed credit and
	// settled what its reversal wrote off, instead of returning to the
	// member.
	Recovered Points    `json:"written_off_recovered,omitempty"`
	Status    string    `json:"status,omitempty"`
	Lots      []LotMove `json:"lots,omitempty"`
}
