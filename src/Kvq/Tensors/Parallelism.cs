using System.Diagnostics;

namespace Kvq.Tensors;

/// <summary>A job over an index range [start, end); a struct so the loop body is not a delegate call per item.</summary>
public interface IRangeJob
{
    void Run(int start, int end);
}

/// <summary>
/// How many threads kernels may use. Splits a range into at most <see cref="Threads"/> contiguous pieces (the same
/// boundaries whoever runs them, so results never depend on timing) that the calling thread and persistent workers
/// claim one at a time from a shared counter: the caller starts on piece 0 at once and, when it runs out of its own,
/// takes any piece no worker has claimed yet. So a worker that is late (its core busy with another process, or
/// waking from sleep) costs nothing: the caller runs that piece itself instead of waiting for a thread the OS has
/// not scheduled. The caller waits only for pieces a worker has already started.
/// Decode issues ~60 regions per token of ~5-50 us each, so hand-off latency matters: between regions workers spin
/// on the counter (pause instructions) for <see cref="SpinMicroseconds"/>, then block until woken; nothing is
/// allocated per call. With one thread, or a small range, the job runs inline.
/// Not reentrant: one region at a time per instance (a model run owns its instance).
/// </summary>
public sealed class Parallelism : IDisposable
{
    public int Threads { get; }
    public static readonly Parallelism Single = new(1);

    /// <summary>How long an idle worker polls for the next region before it blocks (a decode token's regions are
    /// microseconds apart; between tokens and runs the gap is longer and the worker sleeps).</summary>
    public const int SpinMicroseconds = 200;

    private readonly Shared _s;
    private readonly Dictionary<Type, IChunkRunner> _runners = new();

    public Parallelism(int threads)
    {
        Threads = Math.Max(1, threads);
        _s = new Shared(Threads - 1);
        for (int i = 0; i < Threads - 1; i++)
        {
            var t = new Thread(_s.WorkerLoop) { IsBackground = true, Name = $"kvq-worker-{i + 1}" };
            t.Start(i);
        }
    }

    public static Parallelism Default => new(Environment.ProcessorCount);

    public void For<TJob>(int count, int minChunk, ref TJob job) where TJob : struct, IRangeJob
    {
        int pieces = Math.Min(Threads, Math.Max(1, count / Math.Max(1, minChunk)));
        if (pieces <= 1)
        {
            job.Run(0, count);
            return;
        }
        var runner = RunnerFor<TJob>();
        runner.Job = job;
        _s.Run(runner, count, pieces);
    }

    /// <summary>Runs <paramref name="job"/> over [0, <paramref name="count"/>) one index per piece: the calling thread
    /// and the workers claim indices one at a time, so items of uneven cost (one sequence's attention each) balance
    /// themselves and a late worker costs at most the item it started. An index's work never depends on who runs it.
    /// Inline with one thread or one item.</summary>
    public void ForEach<TJob>(int count, ref TJob job) where TJob : struct, IRangeJob
    {
        if (Threads <= 1 || count <= 1)
        {
            job.Run(0, count);
            return;
        }
        var runner = RunnerFor<TJob>();
        runner.Job = job;
        _s.Run(runner, count, count);
    }

    /// <summary>The cached runner of job type <typeparamref name="TJob"/> (one per type, made on first use).</summary>
    private JobRunner<TJob> RunnerFor<TJob>() where TJob : struct, IRangeJob
    {
        lock (_runners)
        {
            if (!_runners.TryGetValue(typeof(TJob), out var r)) _runners[typeof(TJob)] = r = new JobRunner<TJob>();
            return (JobRunner<TJob>)r;
        }
    }

    private interface IChunkRunner
    {
        void Run(int piece, int count, int pieces);
    }

    private sealed class JobRunner<TJob> : IChunkRunner where TJob : struct, IRangeJob
    {
        public TJob Job;

        public void Run(int piece, int count, int pieces)
        {
            int start = (int)((long)count * piece / pieces);
            int end = (int)((long)count * (piece + 1) / pieces);
            Job.Run(start, end);
        }
    }

    /// <summary>
    /// The state the calling thread and the workers share (the workers hold this, not the <see cref="Parallelism"/>,
    /// so an undisposed instance is still collected and its finalizer stops them).
    /// A region is published as a claim word: generation in the high 32 bits, next unclaimed piece in the low 32.
    /// A thread claims by compare-and-swap on the word it read, after reading the region's parameters. The swap alone
    /// did not keep regions apart: the caller writes the next region's parameters before it swaps the word, so a worker
    /// could read the last region's final word (every piece claimed), then the next region's larger piece count and
    /// runner, and its swap on the unchanged word succeeded: it ran a piece of the next region before the region began,
    /// and the region ran it again (a serving step's sequence appended twice: IndexOutOfRangeException in
    /// KvSideStore.Store, ~1 in 4 runs of Kvq.Server.Tests' load test, session 13). So the parameters carry their
    /// generation (<c>_paramGen</c>, a sequence lock): 0 while the caller writes them, the region's generation once
    /// written; a thread uses them only if the stamp equals the word's generation before and after it reads them.
    /// </summary>
    private sealed class Shared(int workers)
    {
        private long _claim;            // (generation << 32) | next piece
        private IChunkRunner? _runner;
        private int _count, _pieces;
        private int _done;              // pieces finished in the current region
        private long _paramGen;         // the generation _runner/_count/_pieces belong to; 0 while they are written
        private Exception? _error;
        private volatile bool _stop;
        private readonly int[] _sleeping = new int[workers];
        private readonly ManualResetEventSlim[] _wake = Enumerable.Range(0, workers).Select(_ => new ManualResetEventSlim(false, 1)).ToArray();

        public void Run(IChunkRunner runner, int count, int pieces)
        {
            long gen = (Volatile.Read(ref _claim) >> 32) + 1;
            Interlocked.Exchange(ref _paramGen, 0);      // full fence: the stamp is void before any parameter changes
            _runner = runner;
            _count = count;
            _pieces = pieces;
            _error = null;
            Volatile.Write(ref _done, 0);
            Interlocked.Exchange(ref _paramGen, gen);    // full fence: the parameters are written, then stamped
            Interlocked.Exchange(ref _claim, gen << 32); // full fence: workers see the parameters, then the word
            for (int w = 0; w < _sleeping.Length; w++)
                if (Volatile.Read(ref _sleeping[w]) != 0) _wake[w].Set();
            RunPieces();
            var spin = new SpinWait();
            while (Volatile.Read(ref _done) < pieces) spin.SpinOnce(sleep1Threshold: -1);
            if (_error != null) throw new AggregateException("a parallel kernel chunk failed", _error);
        }

        /// <summary>Claims and runs pieces of the current region until none is left; whether it ran any.</summary>
        private bool RunPieces()
        {
            bool ran = false;
            while (true)
            {
                long c = Volatile.Read(ref _claim);
                long gen = c >> 32;
                if (Volatile.Read(ref _paramGen) != gen)
                {
                    // The caller is between regions: the parameters are being replaced (or are already the next
                    // region's while the word is still the last one's). Nothing here is ours to run yet.
                    if (Volatile.Read(ref _claim) == c) Thread.SpinWait(1);
                    continue;
                }
                int piece = (int)c;
                var runner = _runner;
                int count = _count, pieces = _pieces;
                Interlocked.MemoryBarrier(); // the parameter reads above complete before the stamp is read again
                if (Volatile.Read(ref _paramGen) != gen) continue;
                if (piece >= pieces || runner == null) return ran;
                if (Interlocked.CompareExchange(ref _claim, c + 1, c) != c) continue;
                try
                {
                    runner.Run(piece, count, pieces);
                }
                catch (Exception e)
                {
                    Interlocked.CompareExchange(ref _error, e, null);
                }
                finally
                {
                    Interlocked.Increment(ref _done);
                }
                ran = true;
            }
        }

        public void WorkerLoop(object? index)
        {
            int w = (int)index!;
            long spinTicks = Stopwatch.Frequency * SpinMicroseconds / 1_000_000;
            while (!_stop)
            {
                // Read before looking for pieces: a region published after this read changes the word, so the poll
                // below sees it at once; one published before it is found by RunPieces.
                long seen = Volatile.Read(ref _claim);
                if (RunPieces()) continue;
                // Poll for the next region, then sleep until the caller wakes this worker.
                long until = Stopwatch.GetTimestamp() + spinTicks;
                bool changed = false;
                for (int i = 0; !_stop; i++)
                {
                    if (Volatile.Read(ref _claim) != seen) { changed = true; break; }
                    Thread.SpinWait(1);
                    if ((i & 63) == 63 && Stopwatch.GetTimestamp() > until) break;
                }
                if (changed || _stop) continue;
                Interlocked.Exchange(ref _sleeping[w], 1); // full fence, paired with the caller's exchange of _claim
                if (Volatile.Read(ref _claim) == seen && !_stop) _wake[w].Wait();
                _wake[w].Reset();
                Volatile.Write(ref _sleeping[w], 0);
            }
        }

        public void Stop()
        {
            _stop = true;
            foreach (var e in _wake) e.Set();
        }
    }

    public void Dispose()
    {
        _s.Stop();
        GC.SuppressFinalize(this);
    }

    ~Parallelism() => _s.Stop();
}
