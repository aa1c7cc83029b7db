package core

import "time"

// KindErase erases a member's personal data: its customer reference becomes
// a pseudonym, its channel and attributes are cleared, and copies of its
// reference held beside the ledger are rewritten. Postings, lots and
// balances stay as they are, so totals and reports do not change.
const KindErase = "member.erase"

// ErasedPrefix starts every pseudonym: "erased-" and the member's id.
const ErasedPrefix = "erased-"

// EventMemberErased is the ledger event of an erasure: Member is the
// member's id and MemberRef its pseudonym; it moves no points and names no
// posting, so no report counts it. The reporting sink rewrites the
// member's stored events when it receives one.
const EventMemberErased = "member_erased"

// Pseudonym is the customer reference an erased member keeps.
func Pseudonym(memberID string) string { return ErasedPrefix + memberID }

// Erase is the payload of KindErase. The command's actor names who asked.
type Erase struct {
	Reason string `json:"reason"`
}

// Erasure is the result of KindErase.
type Erasure struct {
	MemberID  string    `json:"member_id"`
	Pseudonym string    `json:"pseudonym"`
	ErasedAt  time.Time `json:"erased_at"`
	ErasedBy  string    `json:"erased_by"`
	Reason    string    `json:"reason"`
	Balance   Balance   `json:"balance"`
	// Merged are the pseudonyms of the accounts merged into this member,
	// erased with it.
	Merged []string `json:"merged,omitempty"`
}
