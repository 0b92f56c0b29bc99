using System.Collections.Concurrent;
using System.Diagnostics;
using Kvq.Bench.Serving;
using Kvq.LlamaCpp;
using LLama;
using LLama.Common;
using LLama.Native;

namespace Kvq.Bench;

/// <summary>
/// The serving peer: llama.cpp's batched decoding (one context whose KV cache is split into one stream per slot, as
/// llama-server runs with --parallel N; one llama_decode per step carrying every running sequence's decode token plus
/// prompt chunks). A unified cache was measured too: there every token's attention spans all slots' cells, several
/// times slower at this size.
/// Its KV cache is sized to the same byte budget as Kvq's; without preemption it admits a request only when the
/// cache can hold its whole prompt and output (llama-server's fixed slots), so its concurrency is what the budget
/// holds at its format. Greedy, end-of-generation ignored, like Kvq's load test.
/// </summary>
public sealed class LlamaCppServe : IDisposable
{
    private readonly LLamaWeights _weights;
    private readonly LLamaContext _context;
    private readonly int _slots, _stepTokens;
    private readonly BlockingCollection<Job> _inbox = new();
    private readonly Thread _thread;

    public int Slots => _slots;
    public int ContextTokens { get; }

    private sealed class Job(ServeRequest request)
    {
        public readonly ServeRequest Request = request;
        public readonly TaskCompletionSource<RequestTiming> Done = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public readonly Stopwatch Clock = Stopwatch.StartNew();
        public readonly List<double> Times = [];
        public int Fed, Slot, Last;
    }

    /// <param name="kvBytesPerToken">Bytes one token takes in llama.cpp's cache at <paramref name="cacheType"/>
    /// (every layer, keys and values).</param>
    public LlamaCppServe(string modelPath, long budgetBytes, long kvBytesPerToken, int tokensPerRequest, int threads,
        string cacheType = "f16", int stepTokens = 256, int maxSlots = 256)
    {
        ContextTokens = (int)Math.Min(int.MaxValue, budgetBytes / kvBytesPerToken) / 256 * 256;
        _slots = Math.Clamp(ContextTokens / tokensPerRequest, 1, maxSlots);
        _stepTokens = stepTokens;
        var p = new ModelParams(modelPath)
        {
            GpuLayerCount = 0,
            ContextSize = (uint)ContextTokens,
            BatchSize = (uint)stepTokens,
            UBatchSize = (uint)stepTokens,
            SeqMax = (uint)_slots,
            KVUnified = false,
            Threads = threads,
            BatchThreads = threads,
            TypeK = LlamaCppModel.CacheType(cacheType),
            TypeV = LlamaCppModel.CacheType(cacheType),
        };
        _weights = LLamaWeights.LoadFromFile(p);
        _context = _weights.CreateContext(p);
        _thread = new Thread(Loop) { IsBackground = true, Name = "llama.cpp-serve" };
        _thread.Start();
    }

    public Task<RequestTiming> Send(ServeRequest request)
    {
        var job = new Job(request);
        _inbox.Add(job);
        return job.Done.Task;
    }

    private void Loop()
    {
        var waiting = new Queue<Job>();
        var running = new List<Job>();
        var free = new Stack<int>(Enumerable.Range(0, _slots).Reverse());
        var batch = new LLamaBatch();
        var logitRows = new List<(Job Job, int Index)>();
        while (!_inbox.IsCompleted)
        {
            while (_inbox.TryTake(out var j, running.Count + waiting.Count == 0 ? 100 : 0)) waiting.Enqueue(j);
            while (waiting.Count > 0 && free.Count > 0)
            {
                var j = waiting.Dequeue();
                j.Slot = free.Pop();
                running.Add(j);
            }
            if (running.Count == 0) continue;
            batch.Clear();
            logitRows.Clear();
            int budget = _stepTokens;
            // Decode tokens first, then prompt chunks (llama-server's order).
            foreach (var j in running)
                if (j.Fed >= j.Request.Prompt.Length && budget > 0)
                {
                    logitRows.Add((j, batch.Add((LLamaToken)j.Last, j.Fed, (LLamaSeqId)j.Slot, true)));
                    j.Fed++;
                    budget--;
                }
            foreach (var j in running)
            {
                int rest = j.Request.Prompt.Length - j.Fed;
                if (rest <= 0 || budget <= 0) continue;
                int n = Math.Min(rest, budget);
                for (int i = 0; i < n; i++)
                {
                    bool last = j.Fed + i == j.Request.Prompt.Length - 1;
                    int at = batch.Add((LLamaToken)j.Request.Prompt[j.Fed + i], j.Fed + i, (LLamaSeqId)j.Slot, last);
                    if (last) logitRows.Add((j, at));
                }
                j.Fed += n;
                budget -= n;
            }
            var rc = _context.NativeHandle.Decode(batch);
            if (rc != DecodeResult.Ok) throw new InvalidOperationException($"llama_decode failed: {rc}");
            foreach (var (j, index) in logitRows)
            {
                j.Last = ThroughputBenchmark.Argmax(_context.NativeHandle.GetLogitsIth(index));
                j.Times.Add(j.Clock.Elapsed.TotalSeconds);
                if (j.Times.Count < j.Request.OutputTokens) continue;
                _context.NativeHandle.MemorySequenceRemove((LLamaSeqId)j.Slot, -1, -1);
                free.Push(j.Slot);
                running.Remove(j);
                j.Done.SetResult(new RequestTiming(j.Times.ToArray(), true));
            }
        }
    }

    public void Dispose()
    {
        _inbox.CompleteAdding();
        _thread.Join();
        _context.Dispose();
        _weights.Dispose();
    }
}
