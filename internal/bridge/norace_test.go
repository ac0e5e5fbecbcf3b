//go:build !race

package bridge

// raceSlowdown stretches convergence deadlines under the race detector.
const raceSlowdown = 1
