from garrison.cli import main

main()
