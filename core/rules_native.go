package core

import (
	"strings"

	celast "github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/operators"
	"github.com/google/cel-go/common/overloads"
	"github.com/google/cel-go/common/types"
)

// Most conditions have one shape: variables compared with constants, list
// membership, a few string tests, joined by &&, || and !. Such a condition
// also runs as a tree of plain Go functions, built once from the checked
// CEL expression, which answers as the CEL interpreter would in a fraction
// of its time. Only what cannot fail at evaluation takes this path (no
// arithmetic, no indexing, no conversions, both sides of a comparison of
// the same type), so CEL's rules on errors inside && and || never come into
// play. Anything else keeps the CEL program; rules_test.go checks that both
// paths agree.

// nativeCond is a condition compiled to Go.
type nativeCond func(*conditionFacts) bool

type (
	nativeInt     func(*conditionFacts) int64
	nativeString  func(*conditionFacts) string
	nativeStrings func(*conditionFacts) []string
)

// compileNative compiles a checked condition to Go, or returns ok false
// when it has a part that only CEL runs.
func compileNative(a *celast.AST) (nativeCond, bool) {
	if a == nil || !a.IsChecked() {
		return nil, false
	}
	n := nativeCompiler{ast: a}
	return n.boolean(a.Expr())
}

type nativeCompiler struct{ ast *celast.AST }

// kind is the checked type of e, or DynKind when the checker left none.
func (n nativeCompiler) kind(e celast.Expr) types.Kind {
	t := n.ast.GetType(e.ID())
	if t == nil {
		return types.DynKind
	}
	return t.Kind()
}

func (n nativeCompiler) boolean(e celast.Expr) (nativeCond, bool) {
	switch e.Kind() {
	case celast.LiteralKind:
		b, ok := e.AsLiteral().(types.Bool)
		if !ok {
			return nil, false
		}
		v := bool(b)
		return func(*conditionFacts) bool { return v }, true
	case celast.CallKind:
		return n.call(e.AsCall())
	}
	return nil, false
}

func (n nativeCompiler) call(c celast.CallExpr) (nativeCond, bool) {
	args := c.Args()
	if c.IsMemberFunction() {
		if len(args) != 1 {
			return nil, false
		}
		return n.stringTest(c.FunctionName(), c.Target(), args[0])
	}
	switch fn := c.FunctionName(); {
	case fn == operators.LogicalNot && len(args) == 1:
		x, ok := n.boolean(args[0])
		if !ok {
			return nil, false
		}
		return func(f *conditionFacts) bool { return !x(f) }, true
	case (fn == operators.LogicalAnd || fn == operators.LogicalOr) && len(args) == 2:
		l, okL := n.boolean(args[0])
		r, okR := n.boolean(args[1])
		if !okL || !okR {
			return nil, false
		}
		if fn == operators.LogicalAnd {
			return func(f *conditionFacts) bool { return l(f) && r(f) }, true
		}
		return func(f *conditionFacts) bool { return l(f) || r(f) }, true
	case fn == operators.In && len(args) == 2:
		return n.in(args[0], args[1])
	case len(args) == 2:
		return n.compare(fn, args[0], args[1])
	}
	return nil, false
}

// stringTest compiles s.startsWith(x), s.endsWith(x) and s.contains(x).
func (n nativeCompiler) stringTest(fn string, target, arg celast.Expr) (nativeCond, bool) {
	s, okS := n.str(target)
	x, okX := n.str(arg)
	if !okS || !okX {
		return nil, false
	}
	switch fn {
	case overloads.StartsWith:
		return func(f *conditionFacts) bool { return strings.HasPrefix(s(f), x(f)) }, true
	case overloads.EndsWith:
		return func(f *conditionFacts) bool { return strings.HasSuffix(s(f), x(f)) }, true
	case overloads.Contains:
		return func(f *conditionFacts) bool { return strings.Contains(s(f), x(f)) }, true
	}
	return nil, false
}

// in compiles membership of a string in a list of strings.
func (n nativeCompiler) in(elem, list celast.Expr) (nativeCond, bool) {
	x, ok := n.str(elem)
	if !ok {
		return nil, false
	}
	if list.Kind() == celast.ListKind {
		l := list.AsList()
		if len(l.OptionalIndices()) > 0 {
			return nil, false
		}
		set := make([]string, 0, len(l.Elements()))
		for _, e := range l.Elements() {
			s, ok := stringLiteral(e)
			if !ok {
				return nil, false
			}
			set = append(set, s)
		}
		return func(f *conditionFacts) bool { return containsString(set, x(f)) }, true
	}
	l, ok := n.strings(list)
	if !ok {
		return nil, false
	}
	return func(f *conditionFacts) bool { return containsString(l(f), x(f)) }, true
}

func containsString(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

// compare compiles ==, !=, <, <=, > and >= between two ints, two strings
// or (== and != only) two booleans.
func (n nativeCompiler) compare(fn string, a, b celast.Expr) (nativeCond, bool) {
	ka, kb := n.kind(a), n.kind(b)
	if ka != kb {
		return nil, false
	}
	switch ka {
	case types.IntKind:
		x, okX := n.integer(a)
		y, okY := n.integer(b)
		if !okX || !okY {
			return nil, false
		}
		return ordered(fn, x, y)
	case types.StringKind:
		x, okX := n.str(a)
		y, okY := n.str(b)
		if !okX || !okY {
			return nil, false
		}
		return ordered(fn, x, y)
	case types.BoolKind:
		x, okX := n.boolean(a)
		y, okY := n.boolean(b)
		if !okX || !okY {
			return nil, false
		}
		switch fn {
		case operators.Equals:
			return func(f *conditionFacts) bool { return x(f) == y(f) }, true
		case operators.NotEquals:
			return func(f *conditionFacts) bool { return x(f) != y(f) }, true
		}
	}
	return nil, false
}

// ordered compiles a comparison of two values of an ordered Go type; CEL
// orders strings by their bytes, as Go does.
func ordered[T int64 | string](fn string, x, y func(*conditionFacts) T) (nativeCond, bool) {
	switch fn {
	case operators.Equals:
		return func(f *conditionFacts) bool { return x(f) == y(f) }, true
	case operators.NotEquals:
		return func(f *conditionFacts) bool { return x(f) != y(f) }, true
	case operators.Less:
		return func(f *conditionFacts) bool { return x(f) < y(f) }, true
	case operators.LessEquals:
		return func(f *conditionFacts) bool { return x(f) <= y(f) }, true
	case operators.Greater:
		return func(f *conditionFacts) bool { return x(f) > y(f) }, true
	case operators.GreaterEquals:
		return func(f *conditionFacts) bool { return x(f) >= y(f) }, true
	}
	return nil, false
}

// integer compiles an int constant, an int variable, or the size of the
// list of segments.
func (n nativeCompiler) integer(e celast.Expr) (nativeInt, bool) {
	switch e.Kind() {
	case celast.LiteralKind:
		i, ok := e.AsLiteral().(types.Int)
		if !ok {
			return nil, false
		}
		v := int64(i)
		return func(*conditionFacts) int64 { return v }, true
	case celast.IdentKind:
		switch e.AsIdent() {
		case "event.amount_cents":
			return (*conditionFacts).amountCents, true
		case "member.tenure_months":
			return func(f *conditionFacts) int64 { return int64(f.mf.TenureMonths) }, true
		}
	case celast.CallKind:
		c := e.AsCall()
		if c.FunctionName() != overloads.Size {
			return nil, false
		}
		var of celast.Expr
		switch {
		case c.IsMemberFunction() && len(c.Args()) == 0:
			of = c.Target()
		case !c.IsMemberFunction() && len(c.Args()) == 1:
			of = c.Args()[0]
		default:
			return nil, false
		}
		l, ok := n.strings(of)
		if !ok {
			return nil, false
		}
		return func(f *conditionFacts) int64 { return int64(len(l(f))) }, true
	}
	return nil, false
}

// str compiles a string constant or a string variable.
func (n nativeCompiler) str(e celast.Expr) (nativeString, bool) {
	if s, ok := stringLiteral(e); ok {
		return func(*conditionFacts) string { return s }, true
	}
	if e.Kind() != celast.IdentKind {
		return nil, false
	}
	switch e.AsIdent() {
	case "event.type":
		return func(f *conditionFacts) string { return f.ev.Type }, true
	case "event.amount":
		return func(f *conditionFacts) string { return f.ev.AmountText }, true
	case "event.channel":
		return func(f *conditionFacts) string { return f.ev.Channel }, true
	case "event.partner":
		return func(f *conditionFacts) string { return f.ev.Partner }, true
	case "member.plan":
		return func(f *conditionFacts) string { return f.mf.Attributes.Plan }, true
	case "member.contract":
		return func(f *conditionFacts) string { return f.mf.Attributes.Contract }, true
	case "member.payment_method":
		return func(f *conditionFacts) string { return f.mf.Attributes.PaymentMethod }, true
	case "member.channel":
		return func(f *conditionFacts) string { return f.mf.Channel }, true
	case "member.tier":
		return func(f *conditionFacts) string { return f.mf.Tier }, true
	}
	return nil, false
}

// strings compiles the list of segments, the only list variable.
func (n nativeCompiler) strings(e celast.Expr) (nativeStrings, bool) {
	if e.Kind() == celast.IdentKind && e.AsIdent() == "member.segments" {
		return func(f *conditionFacts) []string { return f.mf.Attributes.Segments }, true
	}
	return nil, false
}

func stringLiteral(e celast.Expr) (string, bool) {
	if e.Kind() != celast.LiteralKind {
		return "", false
	}
	s, ok := e.AsLiteral().(types.String)
	return string(s), ok
}
