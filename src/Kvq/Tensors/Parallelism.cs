namespace Kvq.Tensors;

/// <summary>A job over an index range [start, end); a struct so the loop body is not a delegate call per item.</summary>
public interface IRangeJob
{
    void Run(int start, int end);
}

/// <summary>
/// How many threads kernels may use. Splits a range into at most <see cref="Threads"/> contiguous chunks; the
/// calling thread runs chunk 0 and persistent workers run the rest. Decode issues ~60 parallel regions per token
/// of ~10-50 us each, so hand-off latency matters: workers spin briefly before sleeping (ManualResetEventSlim's
/// spin-then-block), and nothing is allocated per call. With one thread, or a small range, the job runs inline.
/// Not reentrant: one region at a time per instance (a model run owns its instance).
/// </summary>
public sealed class Parallelism : IDisposable
{
    public int Threads { get; }
    public static readonly Parallelism Single = new(1);

    private readonly Worker[] _workers;
    private readonly Dictionary<Type, IChunkRunner> _runners = new();
    private IChunkRunner? _current;
    private int _count, _chunks, _remaining;
    private Exception? _error;

    public Parallelism(int threads)
    {
        Threads = Math.Max(1, threads);
        _workers = new Worker[Threads - 1];
        for (int i = 0; i < _workers.Length; i++) _workers[i] = new Worker(this, i + 1);
    }

    public static Parallelism Default => new(Environment.ProcessorCount);

    public void For<TJob>(int count, int minChunk, ref TJob job) where TJob : struct, IRangeJob
    {
        int chunks = Math.Min(Threads, Math.Max(1, count / Math.Max(1, minChunk)));
        if (chunks <= 1)
        {
            job.Run(0, count);
            return;
        }
        JobRunner<TJob> runner;
        lock (_runners)
        {
            if (!_runners.TryGetValue(typeof(TJob), out var r)) _runners[typeof(TJob)] = r = new JobRunner<TJob>();
            runner = (JobRunner<TJob>)r;
        }
        runner.Job = job;
        _current = runner;
        _count = count;
        _chunks = chunks;
        _error = null;
        Volatile.Write(ref _remaining, chunks - 1);
        for (int w = 0; w < chunks - 1; w++) _workers[w].Start.Set();
        try
        {
            runner.Run(0, count, chunks);
        }
        finally
        {
            var spin = new SpinWait();
            while (Volatile.Read(ref _remaining) > 0) spin.SpinOnce(sleep1Threshold: -1);
            _current = null;
        }
        if (_error != null) throw new AggregateException("a parallel kernel chunk failed", _error);
    }

    private interface IChunkRunner
    {
        void Run(int chunk, int count, int chunks);
    }

    private sealed class JobRunner<TJob> : IChunkRunner where TJob : struct, IRangeJob
    {
        public TJob Job;

        public void Run(int chunk, int count, int chunks)
        {
            int start = (int)((long)count * chunk / chunks);
            int end = (int)((long)count * (chunk + 1) / chunks);
            Job.Run(start, end);
        }
    }

    /// <summary>A persistent thread running one chunk per region. It holds its owner weakly, so an undisposed
    /// Parallelism is still collected and its finalizer stops the threads.</summary>
    private sealed class Worker
    {
        public readonly ManualResetEventSlim Start = new(false, spinCount: 2000);
        public volatile bool Stop;
        private readonly WeakReference<Parallelism> _owner;
        private readonly int _chunk;

        public Worker(Parallelism owner, int chunk)
        {
            _owner = new WeakReference<Parallelism>(owner);
            _chunk = chunk;
            var t = new Thread(Loop) { IsBackground = true, Name = $"kvq-worker-{chunk}" };
            t.Start();
        }

        private void Loop()
        {
            while (true)
            {
                Start.Wait();
                Start.Reset();
                if (Stop || !_owner.TryGetTarget(out var o)) return;
                try
                {
                    o._current!.Run(_chunk, o._count, o._chunks);
                }
                catch (Exception e)
                {
                    o._error = e;
                }
                finally
                {
                    Interlocked.Decrement(ref o._remaining);
                }
            }
        }
    }

    public void Dispose()
    {
        StopWorkers();
        GC.SuppressFinalize(this);
    }

    ~Parallelism() => StopWorkers();

    private void StopWorkers()
    {
        foreach (var w in _workers)
        {
            w.Stop = true;
            w.Start.Set();
        }
    }
}
