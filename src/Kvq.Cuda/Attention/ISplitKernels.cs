namespace Kvq.Cuda.Attention;

/// <summary>Where <see cref="DecodeAttention"/> takes its split kernel from: production's <see cref="DecodeKernels"/>
/// (nuq version <see cref="DecodeKernels.NuqVersion"/>), or in the kernel lab (dev/kernels/KernelLab) one of the
/// versions production does not run, to time and check them.</summary>
public interface ISplitKernels
{
    /// <summary>The nuq kernel version; it sizes the kernel's dynamic shared memory (<see cref="DecodeAttention.SharedBytes"/>).</summary>
    int Version { get; }

    /// <summary>The split kernel for a cache of <paramref name="keyBits"/> (16: the f16 cache), <paramref name="group"/>
    /// query heads per KV head and, for nuq, the <paramref name="layout"/>.</summary>
    CudaKernel Attention(int keyBits, int valueBits, int group, NuqLayout layout = NuqLayout.Slots);
}
