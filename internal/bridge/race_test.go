//go:build race

package bridge

// raceSlowdown stretches convergence deadlines: the race detector makes
// the bridge, the broker and the checker several times slower.
const raceSlowdown = 5
