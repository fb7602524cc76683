package agent

import "time"

// Clock is the time the agent decides renewals by. Tests give one that
// jumps, so that a renewal due in seconds or hours happens at once.
type Clock interface {
	Now() time.Time
	// After is time.After in this clock's time: its channel receives once
	// Now has moved on by d.
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
