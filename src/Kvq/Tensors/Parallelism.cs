namespace Kvq.Tensors;

/// <summary>A job over an index range [start, end); a struct so the loop body is not a delegate call per item.</summary>
public interface IRangeJob
{
    void Run(int start, int end);
}

/// <summary>
/// How many threads kernels may use. Splits a range into at most <see cref="Threads"/> contiguous chunks;
/// with one thread (or a small range) the job runs inline with no scheduling cost.
/// </summary>
public sealed class Parallelism
{
    public int Threads { get; }
    public static readonly Parallelism Single = new(1);

    public Parallelism(int threads) => Threads = Math.Max(1, threads);

    public static Parallelism Default => new(Environment.ProcessorCount);

    public void For<TJob>(int count, int minChunk, ref TJob job) where TJob : struct, IRangeJob
    {
        int chunks = Math.Min(Threads, Math.Max(1, count / Math.Max(1, minChunk)));
        if (chunks <= 1)
        {
            job.Run(0, count);
            return;
        }
        var copy = job;
        Parallel.For(0, chunks, new ParallelOptions { MaxDegreeOfParallelism = chunks }, c =>
        {
            int start = (int)((long)count * c / chunks);
            int end = (int)((long)count * (c + 1) / chunks);
            copy.Run(start, end);
        });
    }
}
