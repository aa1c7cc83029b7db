package rest

import (
	"encoding/json"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// auditActions names, as the back office names its own, the audit entry of
// each parameter change a caller may send over REST: a program, its tiers,
// rules, rewards, partners and their keys, and external programs with their
// credentials change what members earn and spend, so the audit log keeps
// them whichever way they came.
var auditActions = map[string]string{
	core.KindProgramUpsert:    "program.updated",
	core.KindTiersSet:         "tiers.set",
	core.KindRuleRetire:       "rule.retired",
	core.KindRewardUpsert:     "reward.saved",
	core.KindPartnerUpsert:    "partner.saved",
	core.KindPartnerKeyCreate: "partner.key_issued",
	core.KindPartnerKeyRevoke: "partner.key_revoked",
	core.KindExternalUpsert:   "external.saved",
	// A person's move of a member's points or standing, made through a
	// system of the operator's (a call centre's CRM, say): adjustments,
	// reversals, transfers, merges and status changes. (An erasure keeps
	// who asked for it and why on the member itself, and an audit entry
	// naming the member would keep the reference it erases.)
	core.KindAdjust:     "adjustment.applied",
	core.KindReverse:    "posting.reversed",
	core.KindTransfer:   "points.transferred",
	core.KindMerge:      "member.merged",
	core.KindSuspend:    "member.suspended",
	core.KindReactivate: "member.reactivated",
	core.KindClose:      "member.closed",

	core.KindConversionResolve: "conversion.resolved",
}

// memberAudited are the kinds of auditActions about one member, the
// audit entry's target being program/member.
var memberAudited = map[string]bool{core.KindAdjust: true, core.KindReverse: true,
	core.KindTransfer: true, core.KindMerge: true, core.KindSuspend: true,
	core.KindReactivate: true, core.KindClose: true, core.KindConversionResolve: true}

// auditOf is the audit note of cmd when it changes a parameter, else nil.
// body is the payload as the caller's request made it. The audit entry's
// actor is the calling system, with the person it names in X-Actor.
func auditOf(cmd *bus.Command, body []byte) *bus.Audit {
	action, ok := auditActions[cmd.Kind]
	var named struct {
		Code    string `json:"code"`
		Partner string `json:"partner"`
		Mode    string `json:"mode"`
	}
	_ = json.Unmarshal(body, &named)
	if cmd.Kind == core.KindRuleUpsert {
		action, ok = "rule."+named.Mode+"d", named.Mode != ""
	}
	if !ok {
		return nil
	}
	target := cmd.Program
	switch {
	case memberAudited[cmd.Kind], cmd.Kind == core.KindExternalUpsert:
		target += "/" + cmd.Member
	case named.Partner != "":
		target += "/" + named.Partner
	case named.Code != "" && cmd.Kind != core.KindProgramUpsert:
		target += "/" + named.Code
	}
	actor := "api:" + cmd.Source
	if cmd.Actor != "" {
		actor += " (" + cmd.Actor + ")"
	}
	return &bus.Audit{Action: action, Target: target, Actor: actor}
}
