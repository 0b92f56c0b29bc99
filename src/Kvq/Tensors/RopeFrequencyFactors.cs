namespace Kvq.Tensors;

/// <summary>Per-pair RoPE frequency factors (divisors of each pair's angle) of the scaling schemes that define them.</summary>
public static class RopeFrequencyFactors
{
    /// <summary>
    /// Llama 3.1's scaling (Hugging Face rope_type "llama3"; what llama.cpp's converter writes to rope_freqs.weight):
    /// pairs whose wavelength is below originalContext / highFreqFactor keep their frequency (factor 1), those above
    /// originalContext / lowFreqFactor are slowed by <paramref name="factor"/>, and those between blend the two.
    /// </summary>
    public static float[] Llama3(int ropeDims, float ropeBase, float factor, float lowFreqFactor, float highFreqFactor, int originalContext)
    {
        if (ropeDims <= 0 || ropeDims % 2 != 0) throw new ArgumentOutOfRangeException(nameof(ropeDims), $"rope dims {ropeDims} must be even and positive");
        if (!(factor >= 1) || !(highFreqFactor > lowFreqFactor) || originalContext <= 0)
            throw new ArgumentException($"llama3 RoPE scaling needs factor >= 1 ({factor}), high_freq_factor > low_freq_factor ({highFreqFactor}, {lowFreqFactor}) and a positive original context ({originalContext})");
        double lowWavelength = originalContext / (double)lowFreqFactor;
        double highWavelength = originalContext / (double)highFreqFactor;
        var f = new float[ropeDims / 2];
        for (int i = 0; i < f.Length; i++)
        {
            double freq = 1.0 / Math.Pow(ropeBase, 2.0 * i / ropeDims);
            double wavelength = 2 * Math.PI / freq;
            if (wavelength < highWavelength) f[i] = 1f;
            else if (wavelength > lowWavelength) f[i] = factor;
            else
            {
                double smooth = (originalContext / wavelength - lowFreqFactor) / (highFreqFactor - lowFreqFactor);
                f[i] = (float)(1 / ((1 - smooth) / factor + smooth));
            }
        }
        return f;
    }
}
