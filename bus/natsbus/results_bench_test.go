package natsbus

import (
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// BenchmarkResultWait times what a single REST or SOAP request asks of the
// bus to hear its result: start waiting, have core announce the result,
// receive it, stop waiting; 32 requests at a time, on an embedded server in
// this process. Besides time it reports the CPU of the whole process (the
// server included) per request, the figure to compare on shared cores.
//
//	go test -run '^$' -bench ResultWait -benchtime=20000x ./bus/natsbus/
func BenchmarkResultWait(b *testing.B) {
	_, buses := benchBuses(b, 2)
	gateway, core := buses[0], buses[1]

	var n atomic.Int64
	cpu0 := processCPU()
	b.SetParallelism(16) // 32 waiters on two cores
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			txn := "t-" + strconv.FormatInt(n.Add(1), 10)
			results, unsubscribe, err := gateway.SubscribeResult("pos", txn)
			if err != nil {
				b.Error(err)
				return
			}
			if err := core.PublishResult(result(txn, "c-"+txn)); err != nil {
				b.Error(err)
				return
			}
			select {
			case <-results:
			case <-time.After(10 * time.Second):
				b.Error("no result")
			}
			unsubscribe()
		}
	})
	b.StopTimer()
	b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
}

// processCPU is the user and system CPU this process used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
