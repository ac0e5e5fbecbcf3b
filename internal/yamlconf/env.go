package yamlconf

import (
	"fmt"
	"strings"
)

// ExpandEnv replaces ${VAR} and ${VAR:-default} in s with values from
// lookup. A variable that is unset (lookup reports false) and has no default
// is an error; a variable set to the empty string expands to "" with ${VAR}
// and to the default with ${VAR:-default}, as in the shell. "$${" stands for
// a literal "${"; any other "$" is kept as is. Defaults are literal text:
// they are not expanded again.
func ExpandEnv(s string, lookup func(string) (string, bool)) (string, error) {
	if !strings.Contains(s, "${") {
		return s, nil
	}
	var b strings.Builder
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			b.WriteString(s)
			return b.String(), nil
		}
		if i > 0 && s[i-1] == '$' {
			// s[:i] ends with the escaping '$', which becomes the literal one.
			b.WriteString(s[:i])
			b.WriteString("{")
			s = s[i+2:]
			continue
		}
		b.WriteString(s[:i])
		end := strings.IndexByte(s[i:], '}')
		if end < 0 {
			return "", fmt.Errorf("unterminated %q; close it with \"}\" (write \"$${\" for a literal \"${\")", s[i:])
		}
		expr := s[i+2 : i+end]
		name, def, hasDef := strings.Cut(expr, ":-")
		if !validEnvName(name) {
			return "", fmt.Errorf("invalid environment variable name %q in \"${%s}\"; use letters, digits and underscores", name, expr)
		}
		v, ok := lookup(name)
		switch {
		case hasDef && (!ok || v == ""):
			v = def
		case !ok:
			return "", fmt.Errorf("environment variable %s is not set; set it or give a default with ${%s:-default}", name, name)
		}
		b.WriteString(v)
		s = s[i+end+1:]
	}
}

func validEnvName(name string) bool {
	if name == "" {
		return false
	}
	for i, r := range name {
		switch {
		case r == '_', r >= 'A' && r <= 'Z', r >= 'a' && r <= 'z':
		case r >= '0' && r <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
