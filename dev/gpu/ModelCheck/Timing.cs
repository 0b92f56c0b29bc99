using System.Diagnostics;
using Kvq.Cache;
using Kvq.Model;

namespace Kvq.ModelCheck;

/// <summary>Prefill of a prompt, then greedy decode steps, timed apart (tok/s); the sequence is disposed.</summary>
internal static class Timing
{
    public static (double PrefillTokS, double DecodeTokS) Run(ILanguageModel model, IKvSequence seq, int[] prompt, int decode)
    {
        var logits = new float[model.Config.VocabSize];
        var t = Stopwatch.StartNew();
        model.Forward(prompt, seq, logits);
        double pre = t.Elapsed.TotalSeconds;
        var one = new int[1];
        t.Restart();
        for (int i = 0; i < decode; i++)
        {
            one[0] = Bench.ThroughputBenchmark.Argmax(logits);
            model.Forward(one, seq, logits);
        }
        double dec = t.Elapsed.TotalSeconds;
        if (!logits.All(float.IsFinite)) throw new InvalidOperationException("non-finite logits after the timed decode");
        (seq as IDisposable)?.Dispose();
        return (prompt.Length / pre, decode / dec);
    }
}
