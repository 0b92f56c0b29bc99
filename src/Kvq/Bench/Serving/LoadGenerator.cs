using System.Diagnostics;

namespace Kvq.Bench.Serving;

/// <summary>
/// Drives requests at a server-like target, closed loop (C clients, each sending its next request when the previous
/// finishes) or open loop (Poisson arrivals), and records every request's token times. Engine-neutral: the same
/// generator drives Kvq's engine and the llama.cpp peer.
/// </summary>
public static class LoadGenerator
{
    /// <summary>Runs <paramref name="requests"/> through <paramref name="send"/> (which returns the seconds, from its
    /// start, at which each token came, and whether the request completed). Returns the timings in request order
    /// and the wall-clock seconds of the whole run.</summary>
    public static async Task<(RequestTiming[] Timings, double Seconds)> Run(IReadOnlyList<ServeRequest> requests, ServeWorkload w,
        Func<ServeRequest, Task<RequestTiming>> send, IProgress<int>? progress = null)
    {
        var timings = new RequestTiming[requests.Count];
        int next = -1, done = 0;
        var sw = Stopwatch.StartNew();
        async Task One(int i)
        {
            try { timings[i] = await send(requests[i]); }
            catch (Exception e) { timings[i] = new RequestTiming([], false, e.Message); }
            progress?.Report(Interlocked.Increment(ref done));
        }
        if (w.ArrivalRate is { } rate)
        {
            var rng = new Random(w.Seed + 7919);
            var all = new List<Task>();
            double at = 0;
            for (int i = 0; i < requests.Count; i++)
            {
                double wait = at - sw.Elapsed.TotalSeconds;
                if (wait > 0) await Task.Delay(TimeSpan.FromSeconds(wait));
                all.Add(One(i));
                at += -Math.Log(1 - rng.NextDouble()) / rate;
            }
            await Task.WhenAll(all);
        }
        else
        {
            var clients = Enumerable.Range(0, Math.Max(1, w.Concurrency)).Select(async _ =>
            {
                for (int i; (i = Interlocked.Increment(ref next)) < requests.Count;) await One(i);
            });
            await Task.WhenAll(clients);
        }
        return (timings, sw.Elapsed.TotalSeconds);
    }
}
