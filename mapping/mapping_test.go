package mapping

import (
	"strings"
)

func errText(err error) string {
	if err == nil {
		return "<no error>\n"
	}
	return strings.TrimRight(err.Error(), "\n") + "\n"
}
