package core

import "time"

// Batch statuses: a stored file moves from received through validating to
// validated (or failed, when it cannot be read at all), then through
// posting to posted.
const (
	BatchReceived   = "received"
	BatchValidating = "validating"
	BatchValidated  = "validated"
	BatchFailed     = "failed"
	BatchPosting    = "posting"
	BatchPosted     = "posted"
)

// Line statuses: valid or invalid after validation, posted or rejected by
// the ledger after posting.
const (
	LineValid    = "valid"
	LineInvalid  = "invalid"
	LinePosted   = "posted"
	LineRejected = "rejected"
)

// Batch is one file of point loads: stored, checksummed, validated, then
// posted line by line to the ledger.
type Batch struct {
	ID         string `json:"id"`
	Program    string `json:"program"`
	Checksum   string `json:"sha256"`
	FileName   string `json:"file_name"`
	Path       string `json:"-"`
	Size       int64  `json:"size_bytes"`
	Charset    string `json:"charset"`
	DateFormat string `json:"date_format,omitempty"`
	UploadedBy string `json:"uploaded_by"`
	// UploadedSource is the API key's source of a REST upload, else empty.
	UploadedSource string     `json:"uploaded_source,omitempty"`
	Channel        string     `json:"channel"`
	Status         string     `json:"status"`
	Error          string     `json:"error,omitempty"`
	Lines          int64      `json:"lines"`
	Valid          int64      `json:"valid_lines"`
	Invalid        int64      `json:"invalid_lines"`
	Credit         Points     `json:"credit_points"`
	Debit          Points     `json:"debit_points"`
	NeedsApproval  bool       `json:"needs_approval"`
	ApprovedBy     string     `json:"approved_by,omitempty"`
	ApprovedAt     *time.Time `json:"approved_at,omitempty"`
	PostedBy       string     `json:"posted_by,omitempty"`
	PostedThrough  int64      `json:"posted_through_line"`
	Posted         int64      `json:"posted_lines"`
	Replayed       int64      `json:"replayed_lines"` // of Posted: applied already, not again
	Rejected       int64      `json:"rejected_lines"`
	RunStartedAt   *time.Time `json:"-"`
	RunStartDone   int64      `json:"-"`
	CreatedAt      time.Time  `json:"created_at"`
	ValidatedAt    *time.Time `json:"validated_at,omitempty"`
	StartedAt      *time.Time `json:"started_at,omitempty"`
	FinishedAt     *time.Time `json:"finished_at,omitempty"`
}

// Done is how many valid lines the posting step has settled so far.
func (b *Batch) Done() int64 { return b.Posted + b.Rejected }

// BatchLine is one record of a batch file, as validated and as posted.
type BatchLine struct {
	Line        int64      `json:"line"`
	Member      string     `json:"member"`
	Points      Points     `json:"points"`
	Reason      string     `json:"reason"`
	EffectiveAt *time.Time `json:"effective_at,omitempty"`
	ExpiresAt   *time.Time `json:"expires_at,omitempty"`
	TxnID       string     `json:"txn_id"`
	Status      string     `json:"status"`
	ErrorKind   string     `json:"kind,omitempty"`
	ErrorField  string     `json:"field,omitempty"`
	Error       string     `json:"message,omitempty"`
	Replayed    bool       `json:"replayed,omitempty"`
}
