// Package bus holds the conventions every part of Puntos follows on the
// message bus: the command and event envelopes, the subject names and the
// way commands are spread over partitions. It knows no business rules.
package bus

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"hash/fnv"
	"strconv"
	"time"
)

// Command is one request to change the ledger, as the gateway puts it on the
// bus. The pair (Source, TxnID) identifies it everywhere; Hash is a digest of
// the normalised payload so that a retry can be told from a changed request.
type Command struct {
	ID         string          `json:"id"`
	Kind       string          `json:"kind"`
	Source     string          `json:"source"`
	TxnID      string          `json:"txn_id"`
	Program    string          `json:"program"`
	Member     string          `json:"member"`
	Actor      string          `json:"actor,omitempty"`
	Channel    string          `json:"channel,omitempty"`
	Payload    json.RawMessage `json:"payload"`
	Hash       string          `json:"hash"`
	OccurredAt time.Time       `json:"occurred_at"`
	ReceivedAt time.Time       `json:"received_at"`
	// Audit, when set, asks the ledger to record the change in the back
	// office's audit log, in the transaction that applies it. It is not part
	// of Hash: it says who asked and why, not what is asked.
	Audit *Audit `json:"audit,omitempty"`
}

// Audit is the audit note of a back-office parameter change: what kind of
// change it is (rule.saved) and what it names (telco/base). The person is
// the command's Actor; the ledger adds the time and the parameter as it was
// before and is after.
type Audit struct {
	Action string `json:"action"`
	Target string `json:"target"`
	// Actor, when set, is who the entry names instead of the command's
	// Actor: a system calling the API, with the person it says it acts for.
	Actor string `json:"actor,omitempty"`
}

// Seal computes Hash from the fields that define what the command asks for.
// Two commands with the same (Source, TxnID) and different Hash conflict.
// Call it before filling in defaults the caller did not send (a zero
// OccurredAt is hashed as absent).
func (c *Command) Seal() {
	h := sha256.New()
	occurred := ""
	if !c.OccurredAt.IsZero() {
		occurred = c.OccurredAt.UTC().Format(time.RFC3339Nano)
	}
	for _, s := range []string{c.Kind, c.Program, c.Member, occurred} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	h.Write(c.Payload)
	c.Hash = hex.EncodeToString(h.Sum(nil))
}

// Result statuses.
const (
	StatusOK       = "ok"       // applied (or a replay of an applied command)
	StatusRejected = "rejected" // refused by a business rule; nothing changed
)

// Whereabouts is what the bus knows of a command it was given and the
// ledger has no result for.
type Whereabouts int

const (
	// Unknown: neither waiting nor set aside. Either core applied it (read
	// the ledger again) or it never arrived.
	Unknown Whereabouts = iota
	// Waiting: on its partition and not yet acknowledged by core (waiting,
	// being applied, or asked for again); also the answer when the bus
	// cannot tell.
	Waiting
	// DeadLettered: core failed to apply it as many times as it tries and
	// set it aside in the dead-letter stream, for an operator to look at.
	DeadLettered
)

// DeadLetteredMessage is what the edges tell a caller about a command set
// aside as a dead letter that the ledger has no result for.
const DeadLetteredMessage = "not applied: the platform failed to apply this command and " +
	"set it aside for its operators; nothing changed"

// Result is what core answers for a command once its transaction committed.
// A replay of the same command carries the first result again.
type Result struct {
	CommandID string          `json:"command_id"`
	Source    string          `json:"source"`
	TxnID     string          `json:"txn_id"`
	Kind      string          `json:"kind"`
	Status    string          `json:"status"`
	Replayed  bool            `json:"replayed,omitempty"`
	Error     *Error          `json:"error,omitempty"`
	Data      json.RawMessage `json:"data,omitempty"`
}

// Error is the wire form of a core error: a kind from the small set the
// edges map to HTTP statuses and SOAP faults, the field at fault, a message.
type Error struct {
	Kind    string `json:"kind"`
	Field   string `json:"field,omitempty"`
	Message string `json:"message"`
}

// StoredEvent is a ledger event as the outbox keeps it: its id, its subject
// (EventSubject) and its JSON. The relay publishes it as it is, without
// decoding and encoding it again.
type StoredEvent struct {
	ID      string
	Subject string
	Body    []byte
}

// Event is a ledger event, written to the outbox in the ledger transaction
// and published on the events stream after commit.
type Event struct {
	ID          string    `json:"event_id"`
	Kind        string    `json:"kind"`
	Program     string    `json:"program"`
	Member      string    `json:"member"`
	MemberRef   string    `json:"member_ref,omitempty"`
	Points      int64     `json:"points"`
	OccurredAt  time.Time `json:"occurred_at"`
	RecordedAt  time.Time `json:"recorded_at"`
	Source      string    `json:"source"`
	TxnID       string    `json:"txn_id"`
	RuleVersion string    `json:"rule_version,omitempty"`
	Partner     string    `json:"partner,omitempty"`
	Channel     string    `json:"channel,omitempty"`
	PostingID   int64     `json:"posting_id,omitempty"`
	// Tier is the member's tier level when the event was recorded, empty
	// for none: for an accrual, the level the accrual itself reaches.
	Tier string `json:"tier,omitempty"`
	// Detail is what an event that moves no points tells beyond the common
	// fields, as a JSON object (an expiry_notice: core.ExpiryNotice).
	Detail json.RawMessage `json:"detail,omitempty"`
}

// Stream and subject names.
const (
	CommandStream   = "PUNTOS_COMMANDS"
	EventStream     = "PUNTOS_EVENTS"
	DeadStream      = "PUNTOS_DEAD"
	CommandSubjects = "puntos.cmd.>"
	EventSubjects   = "puntos.evt.>"
	DeadSubjects    = "puntos.dead.>"
	ResultSubjects  = "puntos.result.*"
)

// CommandSubject is the subject of partition p.
func CommandSubject(p int) string { return "puntos.cmd." + strconv.Itoa(p) }

// EventSubject is the subject a ledger event of the given program goes to.
func EventSubject(program, kind string) string {
	return "puntos.evt." + token(program) + "." + token(kind)
}

// DeadSubject is where a command of partition p goes when it cannot be
// applied and names no (source, txn): a line that is not a command. Before
// 5 December 2026 11:45 UTC every dead letter went there.
func DeadSubject(p int) string { return "puntos.dead." + strconv.Itoa(p) }

// DeadSubjectsByPartition matches what DeadSubject makes, and no subject
// DeadCommandSubject does.
const DeadSubjectsByPartition = "puntos.dead.*"

// DeadCommandSubject is where the command (source, txn) goes when it cannot
// be applied: a subject of its own, so that whether it was dead-lettered is
// one lookup of the stream's last message on it, however many dead letters
// the stream holds.
func DeadCommandSubject(source, txn string) string {
	sum := sha256.Sum256([]byte(source + "\x00" + txn))
	return "puntos.dead.cmd." + hex.EncodeToString(sum[:16])
}

// DeadCommandSubjects matches what DeadCommandSubject makes, and no subject
// DeadSubject or DiscardedCommandSubject does.
const DeadCommandSubjects = "puntos.dead.cmd.*"

// DiscardedCommandSubject is where the mark of the command (source, txn)
// goes when an operator discards its latest dead letter: a subject apart
// from the letters', so that the server's count of messages by subject
// tells the letters waiting from the marks. Until 5 December 2026 marks
// were stored on DeadCommandSubject, among the letters.
func DiscardedCommandSubject(source, txn string) string {
	sum := sha256.Sum256([]byte(source + "\x00" + txn))
	return "puntos.dead.discarded." + hex.EncodeToString(sum[:16])
}

// DeadRefusedSubject is where a command of partition p goes when the
// ledger refused it for good (an unknown member, an invalid field): its
// refusal is stored and answers the caller, its status URL and any retry
// (a re-drive too), so the letter is a record for operators, not a task.
// A subject per partition, apart from DeadCommandSubject's: the server's
// counts by subject tell these letters, which callers' mistakes make every
// day, from commands that failed to apply, and however many pile up they
// are a handful of subjects to count. No status lookup needs them by
// command. Until 5 December 2026 17:00 UTC refusals were stored on
// DeadCommandSubject.
func DeadRefusedSubject(p int) string { return "puntos.dead.refused." + strconv.Itoa(p) }

// DeadRefusedSubjects matches what DeadRefusedSubject makes, and nothing
// else.
const DeadRefusedSubjects = "puntos.dead.refused.*"

// ResultSubject is the core-NATS subject on which the result of the command
// (source, txn) is announced. Waiters subscribe before publishing.
func ResultSubject(source, txn string) string {
	sum := sha256.Sum256([]byte(source + "\x00" + txn))
	return "puntos.result." + hex.EncodeToString(sum[:16])
}

// MsgID is the de-duplication id of a command on the stream: a retry of the
// same request is dropped by the server, a changed request is not, so that
// core can answer it with a conflict. Sources and transaction ids may hold
// ':' but never '/' (core.ValidRef, and the gateways' checks of source
// names), so the id names one (source, txn) pair: with ':' between them,
// source "partner" and txn "acme:9" made the id of source "partner:acme"
// and txn "9", and the bus dropped one as the other's retry. Until 5
// December 2026 the separator was ':' (LegacyMsgIDPrefix).
func MsgID(c Command) string { return MsgIDPrefix(c.Source, c.TxnID) + c.Hash[:MsgIDDigits] }

// MsgIDPrefix is what the message id of every command (source, txn) starts
// with; a message id of the pair is this prefix and 16 more characters.
func MsgIDPrefix(source, txn string) string { return source + "/" + txn + "/" }

// LegacyMsgIDPrefix is MsgIDPrefix as it was before the separator became
// '/': commands stored by an older gateway still carry it.
func LegacyMsgIDPrefix(source, txn string) string { return source + ":" + txn + ":" }

// MsgIDDigits is how many characters of the command's digest end its
// message id.
const MsgIDDigits = 16

// Partition spreads members over n partitions; all commands of one member
// land in the same partition and so apply in order.
func Partition(program, member string, n int) int {
	if n <= 1 {
		return 0
	}
	h := fnv.New32a()
	h.Write([]byte(program))
	h.Write([]byte{0})
	h.Write([]byte(member))
	return int(h.Sum32() % uint32(n))
}

func token(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c == '.' || c == '*' || c == '>' || c == ' ' || c < 0x21 || c > 0x7e {
			b[i] = '_'
		}
	}
	if len(b) == 0 {
		return "_"
	}
	return string(b)
}
