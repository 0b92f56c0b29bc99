using System.Diagnostics;
using BenchmarkDotNet.Running;
using Kvq.Micro;

// dotnet run --project bench/Kvq.Micro -c Release -- --filter '*'          BenchmarkDotNet (all benchmarks)
// dotnet run --project bench/Kvq.Micro -c Release -- --quick [specs] [rows]   interleaved best-of timing, no BDN
// --quick exists for a shared, loaded machine: every kernel is timed in rounds that interleave the specs, and the
// minimum over rounds is reported (load only ever adds time), so A/B comparisons come from one run.
// dotnet run --project bench/Kvq.Micro -c Release -- --quick-batch [model] [threads] [context] [batches] [kv]   batched decode
if (args.Length > 0 && args[0] == "--quick-batch")
{
    BatchedDecode.Run(args.Length > 1 ? args[1] : Path.Combine("..", "shared", "models", "books-19m.gguf"),
        args.Length > 2 ? int.Parse(args[2]) : 2, args.Length > 3 ? int.Parse(args[3]) : 512,
        (args.Length > 4 ? args[4] : "1,4,16,32").Split(',').Select(int.Parse).ToArray(), args.Length > 5 ? args[5] : "f16");
    return;
}
// dotnet run --project bench/Kvq.Micro -c Release -- --quick-rows [model] [n] [rounds]   batched decode kernel alone, old vs new
if (args.Length > 0 && args[0] == "--quick-rows")
{
    BatchKernels.Run(args.Length > 1 ? args[1] : Path.Combine("..", "shared", "models", "books-19m.gguf"),
        args.Length > 2 ? int.Parse(args[2]) : 16, args.Length > 3 ? int.Parse(args[3]) : 200);
    return;
}
// dotnet run --project bench/Kvq.Micro -c Release -- --batch-profile [model] [threads] [ctx] [n] [rounds]   batched step: products vs attention
if (args.Length > 0 && args[0] == "--batch-profile")
{
    BatchProfile.Run(args.Length > 1 ? args[1] : Path.Combine("..", "shared", "models", "books-19m.gguf"),
        args.Length > 2 ? int.Parse(args[2]) : 2, args.Length > 3 ? int.Parse(args[3]) : 512,
        args.Length > 4 ? int.Parse(args[4]) : 16, args.Length > 5 ? int.Parse(args[5]) : 10);
    return;
}
// dotnet run --project bench/Kvq.Micro -c Release -- --serve-split [model] [threads] [kv,kv] [running,running] [prompt] [output] [rounds]
// (KVQ_PROFILE=books19m.kvqp for nuq formats)   where the budget serve run's CPU goes: prefills vs batched decode steps
if (args.Length > 0 && args[0] == "--serve-split")
{
    ServeSplit.Run(args.Length > 1 ? args[1] : "../shared/models/books-19m.gguf", args.Length > 2 ? int.Parse(args[2]) : 1,
        (args.Length > 3 ? args[3] : "f16,nuq3-1%").Split(','), (args.Length > 4 ? args[4] : "7,30").Split(',').Select(int.Parse).ToArray(),
        args.Length > 5 ? int.Parse(args[5]) : 2000, args.Length > 6 ? int.Parse(args[6]) : 200, args.Length > 7 ? int.Parse(args[7]) : 2);
    return;
}

// dotnet run --project bench/Kvq.Micro -c Release -- --batch-steps [model] [threads] [ctx] [n] [steps]   batched steps only (for perf record)
if (args.Length > 0 && args[0] == "--batch-steps")
{
    BatchSteps.Run(args.Length > 1 ? args[1] : Path.Combine("..", "shared", "models", "books-19m.gguf"),
        args.Length > 2 ? int.Parse(args[2]) : 1, args.Length > 3 ? int.Parse(args[3]) : 512,
        args.Length > 4 ? int.Parse(args[4]) : 16, args.Length > 5 ? int.Parse(args[5]) : 400);
    return;
}
// dotnet run --project bench/Kvq.Micro -c Release -- --decode-profile [model] [threads] [ctx] [steps] [kv,kv,...] [rounds] [profile.kvqp]   per-op decode breakdown
// (formats in interleaved rounds, wall and thread CPU per op; KV#base runs with the outlier-row prefetch off)
if (args.Length > 0 && args[0] == "--decode-profile")
{
    DecodeProfile.Run(args.Length > 1 ? args[1] : Path.Combine("..", "shared", "models", "books-19m.gguf"),
        args.Length > 2 ? int.Parse(args[2]) : 1, args.Length > 3 ? int.Parse(args[3]) : 512,
        args.Length > 4 ? int.Parse(args[4]) : 64, args.Length > 5 ? args[5] : "f16", args.Length > 6 ? int.Parse(args[6]) : 5,
        args.Length > 7 ? args[7] : null);
    return;
}
// dotnet run --project bench/Kvq.Micro -c Release -- --quick-encode [bits] [rounds]   a decode token's key encode, vector vs the old scalar loop
if (args.Length > 0 && args[0] == "--quick-encode")
{
    EncodeAB.Run(args.Length > 1 ? int.Parse(args[1]) : 4, args.Length > 2 ? int.Parse(args[2]) : 50);
    return;
}
// dotnet run --project bench/Kvq.Micro -c Release -- --quick-attend [model] [threads] [ctx] [kv,kv,...] [rounds] [profile.kvqp]
if (args.Length > 0 && args[0] == "--quick-attend")
{
    AttendAB.Run(args.Length > 1 ? args[1] : Path.Combine("..", "shared", "models", "books-19m.gguf"),
        args.Length > 2 ? int.Parse(args[2]) : 1, args.Length > 3 ? int.Parse(args[3]) : 4000,
        (args.Length > 4 ? args[4] : "f16,nuq4-1%,nuq3-1%").Split(','), args.Length > 6 ? args[6] : null,
        args.Length > 5 ? int.Parse(args[5]) : 50);
    return;
}
// dotnet run --project bench/Kvq.Micro -c Release -- --decode-alloc [kv,kv] [rounds]   managed bytes per decode token (BDN: --filter '*DecodeAllocations*')
if (args.Length > 0 && args[0] == "--decode-alloc")
{
    DecodeAllocations.Quick((args.Length > 1 ? args[1] : "f16,nuq4-1%").Split(','), args.Length > 2 ? int.Parse(args[2]) : 10);
    return;
}
// dotnet run --project bench/Kvq.Micro -c Release -- --quick-matvec [model] [rounds]   a token's weight products, old vs new
if (args.Length > 0 && args[0] == "--quick-matvec")
{
    MatVecSweep.Run(args.Length > 1 ? args[1] : Path.Combine("..", "shared", "models", "books-19m.gguf"), args.Length > 2 ? int.Parse(args[2]) : 200);
    return;
}
// dotnet run --project bench/Kvq.Micro -c Release -- --quick-half-attention [rounds]   f16 decode attention kernels, old vs new
if (args.Length > 0 && args[0] == "--quick-half-attention")
{
    HalfAttentionAB.Run(args.Length > 1 ? int.Parse(args[1]) : 300);
    return;
}
if (args.Length > 0 && args[0] == "--quick-weights")
{
    // An entry TYPE#old runs the products with Int8MatVec switched off (the float kernels over the round-tripped row).
    var names = (args.Length > 1 ? args[1] : "F16,Q8_0#old,Q8_0,Q4_0#old,Q4_0").Split(',');
    var types = names.Select(n => Enum.Parse<Kvq.Tensors.GgmlType>(n.Split('#')[0])).ToArray();
    var wb = types.Select(t => { var b = new WeightKernels { Type = t }; b.Setup(); return b; }).ToArray();
    var bw = new double[types.Length, 2];
    for (int i = 0; i < types.Length; i++) bw[i, 0] = bw[i, 1] = double.MaxValue;
    for (int round = 0; round < 30; round++)
        for (int i = 0; i < types.Length; i++)
        {
            Kvq.Tensors.Quant.Int8MatVec.Enabled = !names[i].EndsWith("#old");
            var sw = Stopwatch.StartNew();
            for (int k = 0; k < 20; k++) wb[i].MatVec();
            bw[i, 0] = Math.Min(bw[i, 0], sw.Elapsed.TotalMicroseconds / 20);
            sw.Restart();
            wb[i].MatMul();
            bw[i, 1] = Math.Min(bw[i, 1], sw.Elapsed.TotalMicroseconds);
        }
    var w0 = wb[0];
    Kvq.Tensors.Quant.Int8MatVec.Enabled = true;
    Console.WriteLine($"{w0.Rows} x {w0.Cols}, 1 thread, microseconds (best of 30 rounds); MatMul over {w0.Tokens} tokens; load {File.ReadAllText("/proc/loadavg").Trim()}");
    Console.WriteLine("| type | matvec | matmul | matmul per token |");
    Console.WriteLine("|---|---:|---:|---:|");
    for (int i = 0; i < types.Length; i++)
        Console.WriteLine($"| {names[i]} | {bw[i, 0]:F1} | {bw[i, 1]:F0} | {bw[i, 1] / w0.Tokens:F2} |");
    return;
}
if (args.Length > 0 && args[0] == "--quick")
{
    var specs = (args.Length > 1 ? args[1] : "f16,q4_0,nuq4-1%,nuq3-1%").Split(',');
    int rows = args.Length > 2 ? int.Parse(args[2]) : 3;
    // Entries take DecodeProfile's suffix (KV#base): the library's A/B switch is set before each timing.
    var benches = specs.Select(s => { var b = new AttentionKernels { Spec = DecodeProfile.Spec(s), Rows = rows }; b.Setup(); return b; }).ToArray();
    var best = new double[specs.Length, 2];
    for (int i = 0; i < specs.Length; i++) best[i, 0] = best[i, 1] = double.MaxValue;
    for (int round = 0; round < 200; round++)
        for (int i = 0; i < specs.Length; i++)
        {
            DecodeProfile.Switch(specs[i]);
            var sw = Stopwatch.StartNew();
            for (int k = 0; k < 5; k++) benches[i].Scores();
            best[i, 0] = Math.Min(best[i, 0], sw.Elapsed.TotalNanoseconds / 5);
            sw.Restart();
            for (int k = 0; k < 5; k++) benches[i].Accumulate();
            best[i, 1] = Math.Min(best[i, 1], sw.Elapsed.TotalNanoseconds / 5);
        }
    Console.WriteLine($"rows {rows}, {AttentionKernels.Tokens} tokens, ns per cached token (best of 200 rounds)");
    foreach (var b in benches)
        if (b.OutliersPerToken is var (k, v) && (k > 0 || v > 0))
            Console.WriteLine($"{b.Spec}: exact outliers per token: keys {k:F2}, values {v:F2}");
    Console.WriteLine("| kv | scores | accumulate | total |");
    Console.WriteLine("|---|---:|---:|---:|");
    for (int i = 0; i < specs.Length; i++)
        Console.WriteLine($"| {specs[i]} | {best[i, 0] / AttentionKernels.Tokens:F2} | {best[i, 1] / AttentionKernels.Tokens:F2} | {(best[i, 0] + best[i, 1]) / AttentionKernels.Tokens:F2} |");
    return;
}
BenchmarkSwitcher.FromAssembly(typeof(AttentionKernels).Assembly).Run(args);
