using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;

namespace Kvq.Bench;

/// <summary>A one-line description of the machine, printed with every measurement.</summary>
public static class MachineInfo
{
    public static string Describe()
    {
        string cpu = "unknown cpu";
        try
        {
            foreach (var line in File.ReadLines("/proc/cpuinfo"))
                if (line.StartsWith("model name", StringComparison.Ordinal)) { cpu = line[(line.IndexOf(':') + 1)..].Trim(); break; }
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        string simd = Avx512F.IsSupported ? "AVX-512" : Avx2.IsSupported ? "AVX2" : "no AVX2";
        return $"{cpu}, {Environment.ProcessorCount} cores, {simd}, {RuntimeInformation.OSDescription}, .NET {Environment.Version}";
    }
}
