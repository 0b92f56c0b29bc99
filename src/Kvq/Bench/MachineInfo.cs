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
        // What the running code uses: under NativeAOT the instruction sets the binary was compiled for, not the CPU's.
        string simd = Avx512F.IsSupported && System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated ? "AVX-512"
            : Avx2.IsSupported ? "AVX2" : "no AVX2";
        string runtime = System.Runtime.CompilerServices.RuntimeFeature.IsDynamicCodeSupported ? "" : " NativeAOT";
        return $"{cpu}, {Environment.ProcessorCount} cores, {simd}, {RuntimeInformation.OSDescription}, .NET {Environment.Version}{runtime}";
    }
}
